"""`sts-eval-mt`'s lines that cannot be translated: kept out of the backend, or isolated when it fails.

    results = translate_lines(mt, sources, docs, "ja", "en", window=0)
    failed_lines(results)        # [{"line": 7, "reason": "untranslatable: blank line"}, ...]

A test set is scored as a whole, so one bad line must not abort it, and every backend must be
scored on the same sentences to keep BLEU comparable. A blank source line, or one holding a
special-token string in the `<|name|>` form (ChatML/LFM2's `<|im_end|>`, Llama-3's `<|eot_id|>`, our
`<|s_k|>`; a chat template would read it as a control token, and `sts.tasks` refuses it), is not
sent to any backend. A line on which the backend fails is isolated: its batch is retried line by
line and only that line fails. Both come back with an empty translation, which `sts-eval-mt` scores
as an empty hypothesis and names by line number. If every line of a direction fails in the backend,
that is a broken backend, not bad lines: the first error is raised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sts.mt import MTBackend, MTResult, translate_in_context

SPECIAL_TOKEN = re.compile(r"<\|[^|<>\s]{1,64}\|>")
"""A special-token string in the `<|name|>` form of ChatML/LFM2, Llama-3 and the speech tokens."""
LINE_ERROR = "mt_error"
"""`MTResult.drop_reason` of a line the backend failed on (`mt_error: <reason>` when isolated)."""
UNTRANSLATABLE = "untranslatable"
"""`MTResult.drop_reason` prefix of a line not sent to the backend (`untranslatable: <reason>`)."""


def untranslatable(text: str) -> str | None:
    """Why a source line is not sent to a backend (None: it is): blank, or a special-token string."""
    if not text.strip():
        return "blank line"
    found = SPECIAL_TOKEN.search(text)
    return f"holds the special-token string {found.group()!r}" if found else None


class LineIsolatingMT(MTBackend):
    """Wraps a backend so that its failures stay with their lines.

    A batch call that raises, or rows that come back as "mt_error" (`sts.mt`'s chat backends drop a
    whole failed batch so), are retried one line at a time; a line that still fails becomes
    `MTResult(None, "mt_error: <type>: <message>")` and its exception is kept in `errors`.
    ImportError (a missing optional package) is raised at once.
    """

    def __init__(self, inner: MTBackend):
        self.inner, self.name = inner, inner.name
        self.errors: list[Exception] = []

    def translate(self, texts, src_lang, tgt_lang, contexts=None) -> list[MTResult]:
        try:
            results = list(self.inner.translate(texts, src_lang, tgt_lang, contexts))
        except ImportError:
            raise
        except Exception as err:  # noqa: BLE001 - retried line by line; raised by translate_lines if no line works
            if len(texts) == 1:
                return [self._failed(err)]
            results = [MTResult(None, LINE_ERROR)] * len(texts)
        for i, result in enumerate(results):
            if result.drop_reason != LINE_ERROR or len(texts) == 1:
                continue
            context = [contexts[i]] if contexts is not None else None
            try:
                [results[i]] = self.inner.translate([texts[i]], src_lang, tgt_lang, context)
            except ImportError:
                raise
            except Exception as err:  # noqa: BLE001 - recorded for this line
                results[i] = self._failed(err)
        return results

    def _failed(self, err: Exception) -> MTResult:
        self.errors.append(err)
        return MTResult(None, f"{LINE_ERROR}: {type(err).__name__}: {' '.join(str(err).split())[:300]}")


def translate_lines(
    mt: MTBackend,
    sources: Sequence[str],
    docs: Sequence[str | None],
    src_lang: str,
    tgt_lang: str,
    *,
    window: int,
) -> list[MTResult]:
    """One result per source line, in order (`sts.mt.translate_in_context` with `window` for the rest).

    Untranslatable lines come back as `MTResult(None, "untranslatable: <reason>")` without reaching
    the backend; lines the backend fails on as `MTResult(None, "mt_error...")`. Raises the first
    backend error when every line sent failed with one.
    """
    reasons = [untranslatable(t) for t in sources]
    keep = [i for i, r in enumerate(reasons) if r is None]
    results = [MTResult(None, f"{UNTRANSLATABLE}: {r}") for r in reasons]
    if not keep:
        return results
    isolating = LineIsolatingMT(mt)
    translated = translate_in_context(
        isolating, [sources[i] for i in keep], [docs[i] for i in keep], src_lang, tgt_lang,
        window=window, history={},
    )  # fmt: skip
    for i, result in zip(keep, translated, strict=True):
        results[i] = result
    if isolating.errors and all((r.drop_reason or "").startswith(LINE_ERROR) for r in translated):
        raise isolating.errors[0]
    return results


def failed_lines(results: Sequence[MTResult]) -> list[dict]:
    """[{"line", "reason"}] of the lines that could not be translated (1-based line numbers)."""
    return [
        {"line": i + 1, "reason": r.drop_reason}
        for i, r in enumerate(results)
        if (r.drop_reason or "").startswith((UNTRANSLATABLE, LINE_ERROR))
    ]
