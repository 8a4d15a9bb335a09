"""The standard speech-translation test sets, read into `sts-eval` items: FLEURS, CVSS-C, CoVoST 2.

    sts-eval --benchmark fleurs --direction ja-en --split test --model runs/sft -o reports/fleurs
    sts-eval --benchmark cvss --data-dir cvss_c_ja_en_v1.0 --common-voice-dir cv4/ja --model runs/sft

    from infer.testsets import load_test_set
    test = load_test_set("fleurs", direction="ja-en", split="test", max_items=20)
    test.items, test.tasks, test.source, test.dropped

| benchmark | directions | tasks | data |
|---|---|---|---|
| fleurs | ja-en, en-ja | s2st, s2tt, asr | streamed from the hub (`google/fleurs`), or `--data-dir` |
| cvss | ja-en | s2st, s2tt, asr | `--data-dir` (CVSS-C release) + `--common-voice-dir` (Common Voice 4) |
| covost2 | ja-en, en-ja | s2tt, asr | `--data-dir` (CoVoST 2 tsv) + `--common-voice-dir` (Common Voice 4) |

Each module (`fleurs`, `cvss`, `covost2`) says how its dataset is laid out and where the layout
was read. Items keep the test set's order; `max_items` takes the first N that can be scored, and
rows that cannot be (no reference for the pair, say) are counted in `dropped` by reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from infer.eval_items import EvalItem
from sts.errors import UsageError

BENCHMARKS = ("fleurs", "cvss", "covost2")


@dataclass
class TestSet:
    """A standard test set read into items, with what it is and where it came from."""

    benchmark: str
    """"fleurs" | "cvss" | "covost2"."""
    split: str
    direction: str
    """"ja-en" or "en-ja"."""
    source: str
    """Where it was read: a hub repo (and revision) or a local folder."""
    items: list[EvalItem]
    tasks: tuple[str, ...]
    """The tasks the test set supports (its fields allow)."""
    reference: str
    """What `tgt_text` is (e.g. "FLEURS raw_transcription of the en_us sentence with the same id")."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Rows not used, by reason."""

    def describe(self) -> dict:
        return {
            "benchmark": self.benchmark,
            "split": self.split,
            "direction": self.direction,
            "source": self.source,
            "items": len(self.items),
            "tasks": list(self.tasks),
            "reference": self.reference,
            "dropped": dict(self.dropped),
        }


NETWORK_LIBRARIES = ("httpx", "httpx2", "requests", "urllib3", "aiohttp")
"""Whose exceptions mean the hub could not be reached (they are not `OSError`s)."""


@contextmanager
def hub_errors(what: str, hint: str) -> Iterator[None]:
    """Turn a network library's error while reading `what` from the hub into a `ConnectionError`
    (one line through `sts.errors.cli_main`) that says `hint`; other errors pass unchanged."""
    try:
        yield
    except ConnectionError as err:
        raise ConnectionError(f"{what}: {err}; {hint}") from err
    except Exception as err:  # noqa: BLE001 - re-raised unless it is a network library's
        if type(err).__module__.split(".")[0] not in NETWORK_LIBRARIES:
            raise
        raise ConnectionError(f"{what}: cannot reach the hub ({type(err).__name__}: {err}); {hint}") from err


def parse_direction(direction: str, allowed: tuple[str, ...], benchmark: str) -> tuple[str, str]:
    if direction not in allowed:
        raise UsageError(f"--benchmark {benchmark}: direction {direction!r} is not one of {list(allowed)}")
    src, _, tgt = direction.partition("-")
    return src, tgt


def load_test_set(
    benchmark: str,
    *,
    direction: str = "ja-en",
    split: str = "test",
    max_items: int | None = None,
    data_dir: str | Path | None = None,
    common_voice_dir: str | Path | None = None,
) -> TestSet:
    """Read `benchmark` (see the module docstring); raises `UsageError` / `FileNotFoundError` naming
    what is missing (for CVSS and CoVoST 2 without local data: what to download and where to put it)."""
    if max_items is not None and max_items < 1:
        raise UsageError(f"--max-items must be at least 1, got {max_items}")
    if benchmark == "fleurs":
        from infer.testsets import fleurs

        return fleurs.load(direction, split, max_items, data_dir)
    if benchmark == "cvss":
        from infer.testsets import cvss

        return cvss.load(direction, split, max_items, data_dir, common_voice_dir)
    if benchmark == "covost2":
        from infer.testsets import covost2

        return covost2.load(direction, split, max_items, data_dir, common_voice_dir)
    raise UsageError(f"--benchmark {benchmark!r}: expected one of {list(BENCHMARKS)}")
