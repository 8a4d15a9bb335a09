"""Build corpus shards: one worker's part of a source, in chunks, resumably (`sts-build-corpus`).

    sts-build-corpus --out-dir corpus/ja-en --source emilia --languages ja \
        --mt hf --mt-model LiquidAI/LFM2-350M-ENJP-MT --tts llasa:HKUSTAudio/Llasa-1B \
        --num-shards 8 --shard-index 3 --rows-per-shard 2000

    sts-build-corpus --out-dir corpus/en-mono --source local --path clips.jsonl --mt none   # monolingual

    from corpus_builder.build import BuildConfig, build_corpus
    for chunk in build_corpus(cfg):     # one ChunkResult per chunk written or skipped
        ...

Sharding: worker `shard_index` of `num_shards` reads its part of the source (see
`corpus_builder.sources.open_source`: Emilia by whole tar files, or every N-th example when the
file count does not divide evenly; local and text-pair sources by row index modulo N). Its rows are
cut into chunks of `rows_per_shard` *source* rows; chunk k becomes
`data/part-{shard_index}-of-{num_shards}-{k}.parquet` with the rows that survived. Because chunks
are cut before filtering, a rerun finds the same rows in the same chunk and skips chunks that are
done (`corpus_builder.shards`). `--ray` runs every shard index as a Ray task instead.

Monolingual corpora (`--mt none`): every row keeps its source side only (`sts.corpus`: tgt_* null),
for the asr and tts tasks; recorded clips (local, Emilia) need no TTS and none is loaded, text lines
(`--source text`) are spoken by the TTS and checked against their text (`src_asr_error`).

Reruns: the folder records the settings that decide its rows (`build_settings`: source, filters,
MT, TTS, checks, chunking); a rerun with other settings is refused with a message naming each
difference (a source file counts by its content, so a moved copy is the same source;
`--allow-changed KEY` accepts a change on purpose, e.g. `path` after appending to a manifest).
`--max-rows` is not such a setting: a trial's last, short chunk counts as done only for runs that
read no further, so the full command in the same folder redoes it and goes on (`shards.is_done`).
Each worker holds a lock on the folder while it builds (`shards.worker_lock`): a second builder of
the same worker refuses to start (or waits, `--wait-for-lock`); other workers run in parallel.
Holding it, a worker first removes what a killed run left (`shards.remove_leftovers`) and checks
the files of its done chunks against their recorded rows, size and footer (`shards.check_chunks`):
a missing shard's chunk is built again, a changed one stops the build naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro
from annotated_types import Ge, Interval

from corpus_builder import shards
from corpus_builder.interfaces import Check, TTSBackend
from corpus_builder.pipeline import Outcome, PipelineConfig, process_rows
from corpus_builder.sources import SourceConfig, SourceError, check_source, open_source
from sts.config import config_to_dict
from sts.corpus import CorpusError, corpus_features
from sts.devices import BatchSize, DeviceArgs, DType
from sts.errors import UsageError
from sts.model_files import resolve_model
from sts.mt import MTBackend, load_mt

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class BuildConfig(SourceConfig, DeviceArgs):
    """Build synthetic parallel speech shards: source -> MT -> TTS -> checks -> Parquet."""

    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))]
    """Folder of the Parquet shards and `corpus.json`."""
    mt: Literal["hf", "vllm", "http", "reference", "none"] = "hf"
    """MT backend; "reference" takes the source's own translation (text pairs, a manifest's tgt_text);
    "none" builds a monolingual corpus: rows with no translation side (`sts.corpus`), for the asr and
    tts tasks (a clip keeps its transcript; `--source text` lines are spoken by the TTS)."""
    mt_model: str = "LiquidAI/LFM2-350M-ENJP-MT"
    """HF id or local dir of the MT model (for http: the served model name)."""
    mt_preset: str = ""
    """Prompt/sampling preset name; empty: the model's own preset if known, else greedy."""
    mt_url: str = "http://localhost:8000/v1"
    """Base URL of the OpenAI-compatible endpoint (--mt http)."""
    mt_max_new_tokens: Annotated[int, Ge(1)] = 256
    """Longest translation in tokens."""
    mt_context: Annotated[int, Ge(0)] = 0
    """Context-aware MT: give each segment the previous N segments of its recording (Emilia ids, a
    manifest's `recording` column) and their translations as prior chat turns. 0: off. The context
    restarts at every chunk, so resumed and uninterrupted runs agree."""
    mt_keep_truncated: bool = False
    """Keep translations that reach --mt-max-new-tokens without ending. Default: drop them as
    `mt_truncated` (usually a repetition loop, else a cut sentence)."""
    tts: str = "llasa:HKUSTAudio/Llasa-1B"
    """TTS spec for `corpus_builder.tts.load_tts`, or "python:module:Class" for any importable TTSBackend."""
    tts_kwargs: str = "{}"
    """JSON object of keyword arguments for the TTS constructor."""
    checks: list[str] = field(default_factory=lambda: ["default"])
    """"default" (ASR round trip + speaker similarity, where installed), "none", or "python:module:Class" specs."""
    max_asr_error: Annotated[float, Ge(0)] = 0.3
    """Drop rows whose ASR round trip error (CER ja / WER en) is higher."""
    min_speaker_similarity: Annotated[float, Interval(ge=-1, le=1)] = 0.6
    """Drop rows whose source/target speaker similarity is lower (voice-preserving mode)."""
    dtype: DType = "float32"
    """MT model dtype (float32, bfloat16, float16, or auto)."""
    batch_size: BatchSize = 32
    """Rows per MT/TTS batch."""
    voice_preserving: bool = False
    """Prompt the TTS with the source clip so the target keeps the source speaker's voice."""
    rows_per_shard: Annotated[int, Ge(1)] = 1000
    """Source rows per output chunk (the unit of resumption); survivors are written together."""
    num_shards: Annotated[int, Ge(1)] = 1
    """Workers splitting the source (e.g. a SLURM array size)."""
    shard_index: Annotated[int, Ge(0)] = 0
    """This worker's index in [0, num_shards)."""
    max_rows: Annotated[int | None, Ge(1)] = None
    """Stop after this many source rows of this worker (for trials)."""
    ray: bool = False
    """Run every shard index in [0, num_shards) as a Ray task (`ray.init(address=ray_address)`)."""
    ray_address: str = ""
    """Ray cluster address; empty starts or joins a local instance."""
    ray_gpus_per_task: Annotated[float, Ge(0)] = 0.0
    """GPUs each Ray task reserves."""
    wait_for_lock: bool = False
    """When another builder of the same worker holds the folder, wait for it instead of refusing."""
    allow_changed: list[str] = field(default_factory=list)
    """Recorded settings (see `build_settings`) this rerun may change, e.g. `path` after appending rows
    to a manifest (done chunks stay, new rows are added); the folder's record takes the new values.
    num_shards and rows_per_shard can never change."""


@dataclass
class ChunkResult:
    name: str
    skipped: bool
    stats: dict
    """`shards.empty_stats()` layout: input_rows, rows, drops, seconds per direction."""


def source_config(cfg: BuildConfig) -> SourceConfig:
    names = {f.name for f in dataclasses.fields(SourceConfig)}
    return SourceConfig(**{k: v for k, v in dataclasses.asdict(cfg).items() if k in names})


SOURCE_SETTINGS = tuple(f.name for f in dataclasses.fields(SourceConfig))
MT_SETTINGS = ("mt_model", "mt_preset", "mt_max_new_tokens", "mt_context", "mt_keep_truncated")
CHECK_SETTINGS = ("max_asr_error", "min_speaker_similarity")


def build_settings(cfg: BuildConfig) -> dict:
    """The settings that decide a folder's rows, as recorded in `.progress/layout.json`.

    Source and filters (`SourceConfig`; a source file as its absolute path and SHA-256, so the same
    file moved or copied elsewhere is the same source; a folder as its absolute path), MT (`mt`, and its model, preset,
    token budget, context and truncation rule unless `mt` is "reference"), TTS (`tts`, `tts_kwargs` as
    parsed JSON), checks (and their thresholds unless "none"), `voice_preserving`, and the chunking
    (`num_shards`, `rows_per_shard`). Not: where or how fast it runs (device, dtype, batch size, Ray,
    `mt_url`), the worker index, or `max_rows`.
    """
    settings = {name: getattr(cfg, name) for name in SOURCE_SETTINGS}
    for key in ("path", "tgt_path"):
        value = settings[key]
        if value and Path(value).is_file():  # a manifest or text file: its content is what counts
            settings[key] = {"file": str(Path(value).resolve()), "sha256": file_sha256(Path(value))}
        elif value and (cfg.source != "emilia" or Path(value).exists()):  # an Emilia path may be a hub id
            settings[key] = str(Path(value).resolve())
    settings["mt"] = cfg.mt
    if cfg.mt not in ("reference", "none"):
        settings.update({name: getattr(cfg, name) for name in MT_SETTINGS})
        if Path(cfg.mt_model).exists():
            settings["mt_model"] = str(Path(cfg.mt_model).resolve())
    settings["tts"] = cfg.tts if needs_tts(cfg) else None  # a monolingual build of clips speaks nothing
    settings["tts_kwargs"] = tts_kwargs(cfg) if needs_tts(cfg) else {}
    settings["checks"] = list(cfg.checks)
    if cfg.checks != ["none"]:
        settings.update({name: getattr(cfg, name) for name in CHECK_SETTINGS})
    settings.update(voice_preserving=cfg.voice_preserving, num_shards=cfg.num_shards)
    settings["rows_per_shard"] = cfg.rows_per_shard
    return json.loads(json.dumps(settings))  # plain JSON values, as read back from the record


def needs_tts(cfg: BuildConfig) -> bool:
    """Whether the build speaks anything: a translation (every MT but "none"), or text-only rows."""
    return cfg.mt != "none" or cfg.source in ("text", "text-pairs")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def tts_kwargs(cfg: BuildConfig) -> dict:
    try:
        kwargs = json.loads(cfg.tts_kwargs or "{}")
    except json.JSONDecodeError as err:
        raise CorpusError(f"--tts-kwargs {cfg.tts_kwargs!r}: not valid JSON ({err})") from err
    if not isinstance(kwargs, dict):
        raise CorpusError(f"--tts-kwargs {cfg.tts_kwargs!r}: must be a JSON object")
    return kwargs


def _import(spec: str):
    module, _, attr = spec.removeprefix("python:").partition(":")
    return getattr(importlib.import_module(module), attr)


def make_mt(cfg: BuildConfig) -> MTBackend | None:
    """The MT backend of `cfg`; None for `--mt none` (monolingual rows)."""

    if cfg.mt == "none":
        return None
    kwargs: dict = {}
    if cfg.mt != "reference":
        kwargs = dict(preset=cfg.mt_preset or None, max_new_tokens=cfg.mt_max_new_tokens)
        if cfg.mt == "hf":
            kwargs.update(device=cfg.torch_device(), dtype=cfg.torch_dtype(), batch_size=cfg.batch_size)
        if cfg.mt == "http":
            kwargs.update(base_url=cfg.mt_url)
    return load_mt(cfg.mt, cfg.mt_model, **kwargs)


def make_tts(cfg: BuildConfig) -> TTSBackend | None:
    """The TTS backend of `cfg`; None when the build speaks nothing (`needs_tts`)."""
    if not needs_tts(cfg):
        return None
    kwargs = tts_kwargs(cfg)
    if cfg.tts.startswith("python:"):
        return _import(cfg.tts)(**kwargs)
    from corpus_builder.tts import load_tts  # the TTS package may import heavy parts lazily itself

    return load_tts(cfg.tts, **kwargs)


def make_checks(cfg: BuildConfig) -> list[Check]:
    checks: list[Check] = []
    for spec in cfg.checks:
        if spec == "none":
            continue
        if spec == "default":
            from corpus_builder.checks import default_checks

            checks += default_checks(cfg.max_asr_error, cfg.min_speaker_similarity, device=cfg.torch_device())
        else:
            checks.append(_import(spec)())
    return checks


def prepare_build(cfg: BuildConfig) -> Path:
    """Check the flags, the source and the folder's recorded settings (recording them on a first run).

    Returns the output folder. Raises `CorpusError` (`SourceError`, `shards.SettingsChangedError`)
    before any work; `build_corpus` calls it, a CLI may call it first to fail before showing progress.
    """
    out_dir = Path(cfg.out_dir)
    check_source(source_config(cfg))
    if not 0 <= cfg.shard_index < cfg.num_shards:
        raise SourceError(f"--shard-index {cfg.shard_index} is outside [0, --num-shards {cfg.num_shards})")
    if cfg.rows_per_shard < 1:
        raise CorpusError(f"--rows-per-shard must be at least 1, got {cfg.rows_per_shard}")
    if cfg.max_rows is not None and cfg.max_rows < 1:
        raise CorpusError(f"--max-rows must be at least 1, got {cfg.max_rows}")
    check_monolingual(cfg)
    if out_dir.exists() and not out_dir.is_dir():
        raise CorpusError(f"{out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.min_dnsmos > 0 and cfg.source != "emilia" and importlib.util.find_spec("speechmos") is None:
        raise CorpusError(
            f"--min-dnsmos {cfg.min_dnsmos} with --source {cfg.source} needs speechmos (the eval extra)"
        )
    shards.check_settings(out_dir, build_settings(cfg), cfg.allow_changed)
    return out_dir


def make_dnsmos(cfg: BuildConfig):
    """The DNSMOS scorer `--min-dnsmos` needs (None when it is off); Emilia's rows carry their own value,
    so without speechmos an Emilia build goes on with those alone. Raises `CorpusError` otherwise."""
    if cfg.min_dnsmos <= 0:
        return None
    from sts.dnsmos import Dnsmos

    try:
        return Dnsmos()
    except ImportError as err:
        if cfg.source == "emilia":
            return None
        raise CorpusError(f"--min-dnsmos {cfg.min_dnsmos} with --source {cfg.source}: {err}") from err


def describe_dnsmos(cfg: BuildConfig) -> str:
    from sts.dnsmos import MODEL

    recorded = "the source's recorded value, else " if cfg.source == "emilia" else ""
    return f"source speech DNSMOS OVRL >= {cfg.min_dnsmos}: {recorded}{MODEL}"


def check_monolingual(cfg: BuildConfig) -> None:
    """Refuse flags that contradict each other around `--mt none` (a `UsageError` naming them)."""
    if cfg.mt == "none":
        if cfg.source == "text-pairs":
            raise UsageError(
                "--mt none builds one-language rows and would ignore --tgt-path: use --source text "
                "--path FILE (once per language), or --mt reference for the pairs"
            )
        if cfg.voice_preserving:
            raise UsageError("--voice-preserving needs a translation to speak; --mt none has none")
        if cfg.mt_context:
            raise UsageError("--mt-context needs an MT backend; --mt none translates nothing")
    elif cfg.mt == "reference" and cfg.source == "text":
        raise UsageError(
            "--source text has no reference translations: pass --mt none for a monolingual corpus, or an "
            "MT backend (hf, vllm, http) to translate it"
        )


def check_models(cfg: BuildConfig) -> None:
    """The MT and TTS model folders named by `cfg` exist (`sts.model_files.resolve_model`: a local
    folder that is missing is named as such, not as the hub's repo-id error); hub ids pass. For the
    CLI, before any progress: `build_corpus` callers may pass their own backends instead."""

    if cfg.mt in ("hf", "vllm"):
        resolve_model(cfg.mt_model, what="MT model")
    kind, _, model = cfg.tts.partition(":")
    if needs_tts(cfg) and kind in ("llasa", "llasa-vllm") and model:
        resolve_model(model, what="TTS model")


def build_corpus(
    cfg: BuildConfig,
    *,
    mt: MTBackend | None = None,
    tts: TTSBackend | None = None,
    checks: list[Check] | None = None,
    argv: list[str] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> Iterator[ChunkResult]:
    """Build this worker's chunks, skipping done ones; yields one `ChunkResult` per chunk, then writes the card.

    Backends not given are built from `cfg` (only once a chunk needs them, so a finished rerun loads no model).
    `on_outcome` is called for every processed row (e.g. to advance a progress bar).
    """
    out_dir = prepare_build(cfg)
    with shards.worker_lock(out_dir, cfg.shard_index, cfg.num_shards, wait=cfg.wait_for_lock):
        prefix = shards.worker_prefix(cfg.shard_index, cfg.num_shards)
        shards.remove_leftovers(out_dir, prefix)  # safe: this worker's lock is ours
        for name in shards.check_chunks(out_dir, prefix):  # CorpusError for a changed one
            log.warning("%s: missing; its chunk is built again", shards.chunk_path(out_dir, name))
        backends = {"mt": mt, "tts": tts, "checks": checks, "dnsmos": None}
        yield from _build_chunks(cfg, out_dir, backends, on_outcome)
    mt, tts, checks = backends["mt"], backends["tts"], backends["checks"]
    models = {
        "mt": mt.name if mt else _describe_mt(cfg),
        "mt_context": cfg.mt_context,
        "tts": tts.name if tts else _describe_tts(cfg),
        "checks": [c.name for c in checks] if checks is not None else cfg.checks,
    }
    if cfg.min_dnsmos > 0:
        models["dnsmos"] = describe_dnsmos(cfg)
    shards.write_card(out_dir, config=config_to_dict(cfg), models=models, argv=argv)


def _build_chunks(cfg: BuildConfig, out_dir: Path, backends: dict, on_outcome) -> Iterator[ChunkResult]:
    """The chunk loop of `build_corpus`; fills `backends` (mt, tts, checks) as it first needs them."""
    features = corpus_features()
    pipeline_cfg = PipelineConfig(
        cfg.batch_size,
        cfg.voice_preserving,
        source_config(cfg),
        mt_context=cfg.mt_context,
        mt_keep_truncated=cfg.mt_keep_truncated,
    )
    rows = open_source(source_config(cfg), num_shards=cfg.num_shards, shard_index=cfg.shard_index)
    if cfg.max_rows is not None:
        rows = itertools.islice(rows, cfg.max_rows)
    seen_ids: set[str] = set()
    for chunk in itertools.count():
        batch = list(itertools.islice(rows, cfg.rows_per_shard))
        if not batch:
            break
        name = shards.chunk_name(cfg.shard_index, cfg.num_shards, chunk)
        if shards.is_done(out_dir, name, len(batch)):
            seen_ids.update(r.id for r in batch)
            yield ChunkResult(name, True, shards.read_stats(out_dir, name))
            continue
        backends["mt"] = backends["mt"] or make_mt(cfg)  # None: monolingual rows
        backends["tts"] = backends["tts"] or make_tts(cfg)  # None: nothing to speak
        if backends["checks"] is None:
            backends["checks"] = make_checks(cfg)
        backends["dnsmos"] = backends["dnsmos"] or make_dnsmos(cfg)
        stats, kept, dropped = shards.empty_stats(), [], []
        for outcome in process_rows(
            batch,
            mt=backends["mt"],
            tts=backends["tts"],
            checks=backends["checks"],
            cfg=pipeline_cfg,
            seen_ids=seen_ids,
            dnsmos=backends["dnsmos"],
        ):
            shards.add_outcome(stats, outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            if outcome.row is not None:
                kept.append(outcome.row)
            elif outcome.drop is not None:
                dropped.append(outcome.drop)
        shards.write_chunk(out_dir, name, kept, features, stats, dropped)
        yield ChunkResult(name, False, stats)


def _describe_mt(cfg: BuildConfig) -> str:
    return cfg.mt if cfg.mt in ("reference", "none") else f"{cfg.mt}:{cfg.mt_model}"


def _describe_tts(cfg: BuildConfig) -> str:
    return cfg.tts if needs_tts(cfg) else "none"


def _build_one(cfg: BuildConfig, argv: list[str] | None) -> dict:
    start = time.time()
    results = list(build_corpus(cfg, argv=argv))
    return {
        "shard_index": cfg.shard_index,
        "chunks": len(results),
        "skipped": sum(r.skipped for r in results),
        "rows": sum(r.stats["rows"] for r in results),
        "seconds": time.time() - start,
    }


def build_with_ray(cfg: BuildConfig, argv: list[str] | None = None) -> list[dict]:
    """One Ray task per shard index in [0, num_shards); each builds its chunks as `build_corpus` does."""
    import ray

    if not ray.is_initialized():
        ray.init(address=cfg.ray_address or None, ignore_reinit_error=True, log_to_driver=False)
    task = ray.remote(num_gpus=cfg.ray_gpus_per_task)(_build_one)
    configs = [dataclasses.replace(cfg, shard_index=i, ray=False) for i in range(cfg.num_shards)]
    summaries = ray.get([task.remote(c, argv) for c in configs])
    shards.write_card(
        Path(cfg.out_dir),
        config=config_to_dict(cfg),
        models={
            "mt": _describe_mt(cfg),
            "mt_context": cfg.mt_context,
            "tts": _describe_tts(cfg),
            "checks": cfg.checks,
        },
        argv=argv,
    )
    return summaries
