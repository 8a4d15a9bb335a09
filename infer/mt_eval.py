"""`sts-eval-mt`: score MT backends on a line-aligned ja/en test set, both directions.

    sts-eval-mt --backends hf:LiquidAI/LFM2-350M-ENJP-MT hf:shisa-ai/shisa-v2.1c-lfm2-350m-sft3-tlonly
    sts-eval-mt --backends http:LiquidAI/LFM2-350M-ENJP-MT@http://localhost:8000/v1 --context 2
    sts-eval-mt --backends sts:runs/sft --ja-file test.ja --en-file test.en --max-items 200

The test set defaults to FLORES+ devtest streamed from the hub (`openlanguagedata/flores_plus`,
`jpn_Jpan` and `eng_Latn`, aligned by sentence id; gated: accept its terms and log in first);
`--split dev` takes its dev split, `--test-dir DIR` a local copy (a snapshot of that repository, or
`{split}.ja` + `{split}.en` line-aligned with an optional `metadata_{split}.tsv`; see
`infer.testsets.flores_plus`) and `--ja-file/--en-file` any pair of line-aligned files. Backends are specs:
`hf:MODEL`, `vllm:MODEL`, `http:MODEL@BASE_URL` (an OpenAI-compatible server) and `sts:CHECKPOINT`
(a trained sts model's `t2tt` task, through `infer`). Every sentence of every direction is
translated; a failed translation is scored as an empty string and counted.

A line that cannot be translated is scored as an empty hypothesis, so every backend is scored on the
same sentences and BLEU stays comparable, and it is named by line number with its reason
(`failed_lines` in report.json, a "failed" column and a list in report.md, `error` in
translations.jsonl): a blank source line or one holding a special-token string (`<|...|>`, e.g.
`<|im_end|>`, which a chat template would read as a control token) is not sent to any backend;
a line on which the backend fails is isolated (its batch is retried line by line) and the rest of
the batch is translated. If every line of a batch fails the same way, that is not a bad line but a
broken backend: the error is raised.

Metrics (`sts.metrics`, on raw text as for every text output): sacreBLEU BLEU with `ja-mecab`
(when installed) and `char` into Japanese and `13a` into English, chrF++, each with its signature; COMET when the `comet` package imports and
`--comet-model` names a local checkpoint. `--context N` translates each sentence with the previous N
sentences of its document and their translations (FLORES+: sentences that share a `url`), as the corpus builder's `--mt-context` does, to measure what context buys.

Output in `--out-dir`: `report.json` (scores, signatures, settings, timings, worst cases),
`report.md` (a table comparing backends, then the worst sentences by chrF++ for reading) and
`translations.jsonl` (every hypothesis).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import tyro
from annotated_types import Ge

from infer.load import check_checkpoint
from infer.mt_lines import LINE_ERROR, UNTRANSLATABLE, failed_lines, translate_lines
from infer.testsets import flores_plus
from sts.config import config_to_dict
from sts.devices import BatchSize, DeviceArgs, DType
from sts.errors import UsageError
from sts.io import write_json_atomic, write_text_atomic
from sts.metrics import bleu, chrf, sentence_chrf
from sts.mt import MTBackend, MTResult, load_mt, result_from_text


@dataclass(kw_only=True)
class MTEvalConfig(DeviceArgs):
    """Score MT backends on a line-aligned ja/en test set in both directions."""

    backends: list[str]
    """Backend specs: hf:MODEL, vllm:MODEL, http:MODEL@BASE_URL, sts:CHECKPOINT."""
    test_dir: str = ""
    """Local copy of FLORES+ (a snapshot of the hub repo, or {split}.ja + {split}.en); default: the hub."""
    split: Literal["dev", "devtest"] = "devtest"
    """FLORES+ split."""
    ja_file: str = ""
    """Japanese side (instead of FLORES+; with --en-file)."""
    en_file: str = ""
    """English side, line-aligned with --ja-file."""
    doc_file: str = ""
    """Optional document id per line (one per line) for --context (FLORES+ gives its urls)."""
    directions: list[str] = field(default_factory=lambda: ["en-ja", "ja-en"])
    """Directions to score."""
    max_items: Annotated[int | None, Ge(1)] = None
    """Score only the first N sentence pairs."""
    context: Annotated[int, Ge(0)] = 0
    """Previous sentences of the same document given as context (0: none)."""
    preset: str = ""
    """MT preset name for hf/vllm/http backends (empty: the model's own)."""
    dtype: DType = "float32"
    """Weights of hf/sts backends (float32, bfloat16, float16, or auto)."""
    batch_size: BatchSize = 32
    """Sentences translated together."""
    max_new_tokens: Annotated[int, Ge(1)] = 256
    """Longest translation in tokens."""
    codec: str | None = None
    """Codec for `sts:` backends (default: the one the checkpoint's sts_vocab.json records)."""
    comet_model: str = ""
    """Local COMET checkpoint (e.g. a downloaded Unbabel/wmt22-comet-da); scored when `comet` imports."""
    worst: Annotated[int, Ge(0)] = 10
    """Worst sentences (by sentence chrF++) listed per backend and direction."""
    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("runs/mt-eval")
    """Where report.json, report.md and translations.jsonl go."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"sts_codec": "codec"}
    """Old names, for old files and flags."""


@dataclass
class TestSet:
    name: str
    ja: list[str]
    en: list[str]
    docs: list[str | None]


def load_test_set(cfg: MTEvalConfig) -> TestSet:
    """The sentence pairs (and documents, when known) that `cfg` names, cut to `cfg.max_items`."""
    docs: list[str | None] | None = None
    if cfg.ja_file or cfg.en_file:
        if not (cfg.ja_file and cfg.en_file):
            raise UsageError("give both --ja-file and --en-file")
        ja, en = flores_plus.read_lines(Path(cfg.ja_file)), flores_plus.read_lines(Path(cfg.en_file))
        name = f"{cfg.ja_file}|{cfg.en_file}"
    else:
        ja, en, docs, name = flores_plus.load(cfg.split, cfg.test_dir or None)
        if not any(docs):
            docs = None
    if cfg.doc_file:
        docs = list(flores_plus.read_lines(Path(cfg.doc_file)))
    if len(ja) != len(en):
        raise UsageError(f"{name}: {len(ja)} Japanese lines but {len(en)} English lines")
    if docs is not None and len(docs) != len(ja):
        raise UsageError(f"{name}: {len(docs)} document ids for {len(ja)} sentence pairs")
    n = len(ja) if cfg.max_items is None else min(cfg.max_items, len(ja))
    if n == 0:
        raise UsageError(f"{name}: no sentence pairs")
    if cfg.context > 0 and docs is None:
        raise UsageError(
            f"{name}: --context needs document ids (FLORES+ urls, metadata_SPLIT.tsv or --doc-file)"
        )
    return TestSet(name, ja[:n], en[:n], (docs or [None] * len(ja))[:n])


class STSTextMT(MTBackend):
    """A trained sts checkpoint's `t2tt` task (text in, text out) through `infer.Translator`."""

    def __init__(
        self,
        checkpoint: str,
        *,
        codec: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 32,
    ):
        from infer import Translator

        self.name = f"sts:{checkpoint}"
        check_checkpoint(checkpoint, codec=codec)  # a missing folder or a mismatched sts_vocab.json, named
        self.translator = Translator.from_checkpoint(checkpoint, codec=codec, device=device, dtype=dtype)
        self.translator.batch_size = batch_size

    def translate(self, texts, src_lang, tgt_lang, contexts=None) -> list[MTResult]:
        from infer import Request

        results = self.translator.run([Request("t2tt", src_lang, tgt_lang, text=t) for t in texts])
        return [result_from_text(r.text, truncated=not r.finished) for r in results]


def load_backend(spec: str, cfg: MTEvalConfig) -> MTBackend:
    """An MT backend from a spec (see the module docstring)."""

    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise UsageError(f"backend spec {spec!r}: expected KIND:MODEL, e.g. hf:LiquidAI/LFM2-350M-ENJP-MT")
    common = dict(preset=cfg.preset or None, max_new_tokens=cfg.max_new_tokens)
    if kind == "hf":
        return load_mt(
            "hf",
            rest,
            device=cfg.torch_device(),
            dtype=cfg.torch_dtype(),
            batch_size=cfg.batch_size,
            **common,
        )
    if kind == "vllm":
        return load_mt("vllm", rest, **common)
    if kind == "http":
        model, at, url = rest.rpartition("@")
        if not at:
            raise UsageError(f"backend spec {spec!r}: expected http:MODEL@BASE_URL")
        return load_mt("http", model, base_url=url, **common)
    if kind == "sts":
        return STSTextMT(
            rest,
            codec=cfg.codec,
            device=cfg.torch_device(),
            dtype=cfg.torch_dtype(),
            batch_size=cfg.batch_size,
        )
    raise UsageError(f"backend spec {spec!r}: unknown kind {kind!r} (hf, vllm, http, sts)")


def comet_score(model_path: str, sources, hyps, refs) -> float | None:
    """System COMET score, or None when the `comet` package or the local checkpoint is missing."""
    if not model_path or not Path(model_path).exists():
        return None
    try:
        from comet import load_from_checkpoint
    except ImportError:
        return None
    model = load_from_checkpoint(model_path)
    data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(sources, hyps, refs, strict=True)]
    return float(model.predict(data, batch_size=16, gpus=0, progress_bar=False).system_score)


def score_direction(sources, hyps, refs, tgt_lang: str, *, worst: int = 10, comet_model: str = "") -> dict:
    """Corpus scores with signatures, the empty count and the `worst` sentences by chrF++."""

    scores = [s.as_dict() for s in bleu(hyps, refs, tgt_lang)] + [chrf(hyps, refs).as_dict()]
    per_sentence = [sentence_chrf(h, r) for h, r in zip(hyps, refs, strict=True)]
    order = sorted(range(len(hyps)), key=lambda i: (per_sentence[i], i))[:worst]
    report = {
        "sentences": len(hyps),
        "empty": sum(not h for h in hyps),
        "scores": scores,
        "worst": [
            {
                "line": i + 1,
                "chrf++": per_sentence[i],
                "source": sources[i],
                "hypothesis": hyps[i],
                "reference": refs[i],
            }
            for i in order
        ],
    }
    comet = comet_score(comet_model, sources, hyps, refs)
    if comet is not None:
        report["scores"].append({"name": "COMET", "score": comet, "signature": comet_model})
    return report


def evaluate(cfg: MTEvalConfig, backends: dict[str, MTBackend] | None = None, argv=None) -> dict:
    """Translate and score; writes report.json, report.md and translations.jsonl; returns the report."""
    test = load_test_set(cfg)
    sides = {"ja": test.ja, "en": test.en}
    report: dict = {
        "test_set": test.name,
        "sentences": len(test.ja),
        "context": cfg.context,
        "directions": cfg.directions,
        "backends": {},
        "command": list(argv) if argv is not None else sys.argv,
        "config": config_to_dict(cfg),
    }
    for direction in cfg.directions:  # before any backend loads
        if set(direction.partition("-")[::2]) != {"ja", "en"}:
            raise UsageError(f"direction {direction!r}: expected en-ja or ja-en")
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    translations = []
    for spec in cfg.backends:
        if backends and spec in backends:
            mt = backends[spec]
        else:
            try:
                mt = load_backend(spec, cfg)
            except OSError as err:
                raise OSError(f"backend {spec}: cannot load its model: {err}") from err
        entry = report["backends"].setdefault(spec, {"name": mt.name})
        for direction in cfg.directions:
            src_lang, _, tgt_lang = direction.partition("-")
            sources, refs = sides[src_lang], sides[tgt_lang]
            started = time.perf_counter()
            results = translate_lines(mt, sources, test.docs, src_lang, tgt_lang, window=cfg.context)
            seconds = time.perf_counter() - started
            hyps = [(r.text or "").strip() for r in results]
            failed = failed_lines(results)  # scored as empty, like every other missing translation
            entry[direction] = {
                "seconds": seconds,
                "failed": len(failed),
                "failed_lines": failed,
                "truncated": sum(r.truncated for r in results),  # hit the token budget: loops, cut sentences
                **score_direction(
                    sources, hyps, refs, tgt_lang, worst=cfg.worst, comet_model=cfg.comet_model
                ),
            }
            translations += [
                {
                    "backend": spec,
                    "direction": direction,
                    "line": i + 1,
                    "hypothesis": h,
                    "drop_reason": r.drop_reason,
                    "truncated": r.truncated,
                    "error": r.drop_reason
                    if (r.drop_reason or "").startswith((UNTRANSLATABLE, LINE_ERROR))
                    else None,
                }
                for i, (h, r) in enumerate(zip(hyps, results, strict=True))
            ]
    write_json_atomic(out_dir / "report.json", report)
    write_text_atomic(out_dir / "report.md", markdown(report))
    write_text_atomic(
        out_dir / "translations.jsonl",
        "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in translations),
    )
    return report


def markdown(report: dict) -> str:
    """The comparison table (one row per backend and direction, one column per metric), then worst cases."""
    names: list[str] = []
    for entry in report["backends"].values():
        for direction in report["directions"]:
            for s in entry[direction]["scores"]:
                if s["name"] not in names:
                    names.append(s["name"])
    lines = [
        f"# MT evaluation: {report['test_set']}",
        "",
        f"{report['sentences']} sentence pairs per direction; context: {report['context']} previous sentences.",
        "",
        "| backend | direction | " + " | ".join(names) + " | empty | truncated | seconds | failed |",
        "|---|---|" + "---|" * (len(names) + 4),
    ]
    signatures: dict[str, str] = {}
    for spec, entry in report["backends"].items():
        for direction in report["directions"]:
            d = entry[direction]
            by_name = {s["name"]: s for s in d["scores"]}
            cells = [f"{by_name[n]['score']:.2f}" if n in by_name else "" for n in names]
            lines.append(
                f"| {spec} | {direction} | "
                + " | ".join(cells)
                + f" | {d['empty']} | {d['truncated']} | {d['seconds']:.1f} | {d.get('failed', 0)} |"
            )
            signatures.update({f"{s['name']} ({direction})": s["signature"] for s in d["scores"]})
    lines += ["", "Signatures:", ""] + [f"- {k}: `{v}`" for k, v in signatures.items()]
    failures = [
        f"- {spec}, {direction}, line {f['line']}: {f['reason']}"
        for spec, entry in report["backends"].items()
        for direction in report["directions"]
        for f in entry[direction].get("failed_lines", [])
    ]
    if failures:
        lines += ["", "## Lines not translated (scored as empty)", "", *failures]
    for spec, entry in report["backends"].items():
        for direction in report["directions"]:
            lines += ["", f"## Worst sentences: {spec}, {direction}", ""]
            for w in entry[direction]["worst"]:
                lines += [
                    f"- line {w['line']} (chrF++ {w['chrf++']:.1f})",
                    f"  - source: {w['source']}",
                    f"  - hypothesis: {w['hypothesis']}",
                    f"  - reference: {w['reference']}",
                ]
    return "\n".join(lines) + "\n"
