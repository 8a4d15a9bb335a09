"""`sts-train dpo-pairs`: preference pairs from the model itself, scored by the package's own metrics.

    sts-train dpo-pairs --model runs/sft/checkpoint-0010000 --shards runs/encoded --out-dir runs/pairs
    sts-train dpo --config train/configs/dpo_lfm2_350m.yaml --model runs/sft/checkpoint-0010000 --dpo.pairs runs/pairs

    from train.pairs import PairConfig, build_pairs
    card = build_pairs(PairConfig(model="runs/sft/checkpoint-0010000", shards=["runs/encoded"]))

For each corpus row and task (`tasks`: s2st, tts, s2tt, t2tt by default, both directions), the
prompt is written as `sts-infer` writes it (`train.dev_subset.sft_items`), `samples` answers are
sampled under the inference constraints (`train.gen_eval.decode`: modality constraint, end marker,
loop guard, a budget of twice the reference plus a margin; `sampling`: temperature 1, top-p 0.95),
each answer is scored (`train.pair_scores`: loop and length rules, end marker, chrF++ or
ASR-chrF++ against the reference, speaker similarity to the source speech), and the best answer is
paired against the worst (`Scoring.min_margin` apart; the best must be loop-free and ended).

    runs/pairs/
        pairs/part-00000.parquet    id, row_id, group, task, src_lang, tgt_lang, prompt_ids, chosen_ids,
                                    rejected_ids (list<int32>), chosen_/rejected_ score, sample, loop,
                                    ended, length_ratio, chrf, speaker_sim (null: no score,
                                    `sts.speaker`), speaker_counted (in the score: `train.pair_scores`)
        scores/part-00000.parquet   one row per sampled answer: its measurements and score
        pairs.json                  the card: settings, counts, score distributions (all answers, chosen,
                                    rejected, margins), loop and end rates per group
        pairs_config.yaml           the settings (a rerun with other settings is refused)

Resumable: prompts are taken in corpus order and cut into chunks of `prompts_per_chunk`; chunk k is
sampled with a seed derived from (seed, k) and written as its two part files (scores first, the pair
part last, each atomically). A rerun skips chunks whose pair part exists, so an interrupted run ends
with the same files as one that was not (tests/test_dpo_pairs.py). Rows of the SFT eval split
(`data.eval_fraction`, by id) are left out by default, so the gen eval still measures unseen prompts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import tyro
from annotated_types import Ge, Interval

from sts.config import ConfigError, Renamed, WhenOff, check_config, config_to_dict, load_config, save_config
from sts.devices import BatchSize, DType, ModelArgs
from sts.errors import InputError
from sts.generation import SPEECH_GUARD, TEXT_GUARD, detect_loop
from sts.generation.request import Sampling
from sts.io import atomic_open, remove_stale_temps, write_json_atomic
from sts.lock import LOCK_NAME, folder_lock
from sts.metrics import normalize, sentence_chrf
from sts.optional import load_optional
from sts.paths import absolute_if_local
from sts.speaker import SpeakerEncoder
from sts.tasks import TASK_NAMES, TaskFormatter, load_task_formats
from sts.vocab import SpeechVocab
from train.config import DataArgs, EvalArgs, SftArgs, TrainConfig
from train.data import list_shards
from train.dev_subset import DevItem, iter_rows, sft_items
from train.gen_metrics import SpeechScorer
from train.pair_data import PAIRS_SUBDIR
from train.pair_scores import CandidateScore, Scoring, score_all, select_pairs, summarize_scores
from train.rows import is_eval_row

log = logging.getLogger(__name__)

CARD_NAME = "pairs.json"
CONFIG_NAME = "pairs_config.yaml"
SCORES_SUBDIR = "scores"


class PairsError(InputError, ValueError):
    """The pairs cannot be built as asked: the output folder holds pairs made with other settings,
    or the corpus gives no prompt for the tasks."""


@dataclass(kw_only=True)
class PairConfig(ModelArgs):
    """Sample answers from a checkpoint, score them with the package's metrics, write preference pairs."""

    model: str = "runs/sft/checkpoint-0010000"
    """Checkpoint to sample from (an `sts-train sft` checkpoint: weights, tokenizer, sts_vocab.json)."""
    dtype: DType = "float32"
    """Weights of the sampled model (float32: the answers do not depend on the GPU's bf16)."""
    batch_size: BatchSize = 32
    """Answers per generate call."""
    shards: list[str] = field(default_factory=list)
    """Encoded corpus shards (Parquet files or folders) whose rows give the prompts and references."""
    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("runs/pairs")
    """Output folder (pairs/, scores/, pairs.json); the `--dpo.pairs` of `sts-train dpo`."""
    tasks: list[str] = field(default_factory=lambda: ["s2st", "tts", "s2tt", "t2tt"])
    """Tasks to sample (both directions each)."""
    samples: Annotated[int, Ge(2)] = 4
    """Answers sampled per prompt."""
    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=1.0, top_p=0.95))
    """How answers are sampled (must sample: do_sample)."""
    max_prompts: Annotated[int | None, Ge(1)] = None
    """Stop after this many prompts (corpus order); None: every row."""
    prompts_per_chunk: Annotated[int, Ge(1)] = 64
    """Prompts per part file: the unit a rerun resumes from."""
    skip_eval_rows: Annotated[bool, WhenOff("sample rows of the eval split too")] = True
    """Leave out rows of the eval split (`data.eval_fraction`), as SFT held them out."""
    eval_fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.02
    """The SFT run's `data.eval_fraction` (rows held out by a hash of their id)."""
    max_new_tokens: Annotated[int, Ge(1)] = 1000
    """Cap on an answer's budget (2x its reference + a margin below that)."""
    seq_len: Annotated[int, Ge(8)] = 4096
    """Prompts whose prompt + reference exceed this are left out (as training would drop them)."""
    fast: Annotated[bool, WhenOff("sample with a dynamic KV cache, no CUDA graphs (slower)")] = True
    """Static KV cache (+ CUDA graphs on a GPU) for the sampling (`TransformersBackend(fast=True)`)."""
    asr: str = "auto"
    """ASR for ASR-chrF++ of speech answers: auto (offline Whisper first), none, or a Whisper name/path."""
    speaker: Annotated[bool, WhenOff("no speaker similarity in the scores (no resemblyzer needed)")] = True
    """Score speaker similarity of speech answers (resemblyzer, `sts.speaker`)."""
    speaker_reference: Literal["source", "target"] = "source"
    """Voice to compare with: the source speech (s2st; tts has none and uses its reference speech), or
    the reference target speech (a corpus whose target voice differs from the source voice)."""
    scoring: Scoring = field(default_factory=Scoring)
    """The answer score's weights and the pair rules (`train.pair_scores`)."""
    pairs_per_prompt: Annotated[int, Ge(1)] = 1
    """The best answer against the worst, the next worst, ... (each at least `min_margin` apart)."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of the sampling (chunk k draws with a seed derived from (seed, k))."""

    RENAMED_KEYS: ClassVar[dict[str, Renamed]] = {"temperature": "sampling.temperature"}
    """Old names, for old files and flags."""

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        check_config(self)
        unknown = set(self.tasks) - set(TASK_NAMES)
        if unknown or not self.tasks:
            raise ConfigError(f"must be among {TASK_NAMES}, got {self.tasks}", key="tasks")
        if not self.sampling.do_sample:
            raise ConfigError("must sample (pairs need different answers)", key="sampling.do_sample")


def decode_settings(cfg: PairConfig, s2st_format: str, seed: int) -> TrainConfig:
    """The gen eval's settings (`train.gen_eval.decode`, `train.dev_subset`) for sampling answers."""
    return TrainConfig(
        model=cfg.model, stage="sft", seed=seed, sft=SftArgs(s2st_format=s2st_format),
        data=DataArgs(seq_len=cfg.seq_len, eval_fraction=cfg.eval_fraction),
        eval=EvalArgs(sampling=cfg.sampling, batch_size=cfg.batch_size, fast=cfg.fast, max_new_tokens=cfg.max_new_tokens),
    )  # fmt: skip


def chunk_seed(seed: int, chunk: int) -> int:
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0] % 2**31)


def pair_prompts(cfg: PairConfig, fmt: TaskFormatter, tokenizer) -> list[DevItem]:
    """Every prompt to sample, in corpus order (rows, then tasks and directions as `sft_items` gives them)."""
    settings = decode_settings(cfg, fmt.s2st_format, cfg.seed)
    weights = dict.fromkeys(cfg.tasks, 1.0)
    items: list[DevItem] = []
    rows = iter_rows(list_shards(cfg.shards))
    for row in rows:
        if cfg.skip_eval_rows and is_eval_row(row["id"], cfg.eval_fraction):
            continue
        for item in sft_items(row, fmt, tokenizer, weights, settings):
            items.append(item)
            if cfg.max_prompts is not None and len(items) >= cfg.max_prompts:
                rows.close()
                return items
    return items


def build_pairs(cfg: PairConfig, *, speech_scorer=None, speaker=None) -> dict:
    """Sample, score and pair every prompt of `cfg` (resuming), write the card; returns the card.

    speech_scorer: a `train.gen_metrics.SpeechScorer` (codec + ASR) to use instead of loading one;
    speaker: a `sts.speaker.SpeakerEncoder` (or None to load one when `cfg.speaker`). Raises
    PairsError, FileNotFoundError (shards), `sts.lock.FolderLockedError` (another run writes the folder).
    """
    refusal = "{folder}: another {holder} is writing pairs into this folder; wait for it to end, or use another --out-dir"
    with folder_lock(Path(cfg.out_dir) / LOCK_NAME, program="sts-train dpo-pairs", refusal=refusal):
        for folder in (cfg.out_dir, cfg.out_dir / PAIRS_SUBDIR, cfg.out_dir / SCORES_SUBDIR):
            remove_stale_temps(folder)  # part files a killed run left half-written
        return _build_pairs(cfg, speech_scorer, speaker)


def _build_pairs(cfg: PairConfig, speech_scorer, speaker) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_settings(cfg)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    vocab = SpeechVocab.load(cfg.model)
    fmt = TaskFormatter(tokenizer, vocab, s2st_format=load_task_formats(cfg.model)["s2st"])
    items = pair_prompts(cfg, fmt, tokenizer)
    if not items:
        raise PairsError(f"no prompt for tasks {cfg.tasks} in {cfg.shards} (within seq_len / max_new_tokens)")
    chunks = [items[i : i + cfg.prompts_per_chunk] for i in range(0, len(items), cfg.prompts_per_chunk)]
    todo = [k for k in range(len(chunks)) if not _part(cfg, PAIRS_SUBDIR, k).is_file()]
    log.info("dpo-pairs: %d prompts in %d chunks, %d to sample", len(items), len(chunks), len(todo))
    if todo:
        device = cfg.torch_device()
        lm = (
            AutoModelForCausalLM.from_pretrained(cfg.model, dtype=getattr(torch, cfg.torch_dtype()))
            .to(device)
            .eval()
        )
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        wanted = any(i.output == "speech" for i in items) and (cfg.asr != "none" or cfg.speaker)
        if speech_scorer is None and wanted:
            speech_scorer = SpeechScorer(cfg.codec or vocab.codec, cfg.asr, device)
        if speaker is None and cfg.speaker and wanted:
            speaker = _speaker_encoder(device)
        scorer = _Scorer(cfg, fmt, speech_scorer, speaker)
        for n, k in enumerate(todo):
            _sample_chunk(cfg, k, chunks[k], lm, fmt, scorer, pad_id)
            log.info(
                "dpo-pairs: chunk %d/%d (%d of %d left)", k + 1, len(chunks), len(todo) - n - 1, len(todo)
            )
        notes = scorer.notes
    else:
        notes = []
    old_card = cfg.out_dir / CARD_NAME
    if old_card.is_file():  # what an earlier, interrupted run noted still holds for its chunks
        notes = list(dict.fromkeys([*json.loads(old_card.read_text()).get("notes", []), *notes]))
    card = pairs_card(cfg, len(items), notes)
    write_json_atomic(cfg.out_dir / CARD_NAME, card)
    return card


def _check_settings(cfg: PairConfig) -> None:
    path = cfg.out_dir / CONFIG_NAME
    if path.is_file():
        before = config_to_dict(load_config(PairConfig, path))
        now = config_to_dict(cfg)
        differ = sorted(k for k in now if before.get(k) != now[k])
        if differ:
            raise PairsError(
                f"{cfg.out_dir} holds pairs sampled with other settings (differing: {differ}; {path}); "
                "use another --out-dir"
            )
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path)


def _part(cfg: PairConfig, kind: str, k: int) -> Path:
    return cfg.out_dir / kind / f"part-{k:05d}.parquet"


def _speaker_encoder(device: str):
    return load_optional("speaker encoder (resemblyzer)", lambda: SpeakerEncoder(device),
                         install="resemblyzer (the offline extra)", warn=log.warning)  # fmt: skip


class _Scorer:
    """Measures one chunk's answers: loops, ends, lengths, chrF++ / ASR-chrF++, speaker similarity."""

    def __init__(self, cfg: PairConfig, fmt: TaskFormatter, speech_scorer, speaker):
        self.cfg, self.fmt, self.speech, self.speaker = cfg, fmt, speech_scorer, speaker
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.warning("dpo-pairs: %s", text)

    def measure(self, items: list[DevItem], decoded: list[dict]) -> list[CandidateScore]:

        out = []
        for item, d in zip(items, decoded, strict=True):
            guard = SPEECH_GUARD if item.output == "speech" else TEXT_GUARD
            loop = detect_loop(d["body"], guard)
            chrf = None
            if item.output == "text":
                chrf = sentence_chrf(self.fmt.parse(d["ids"], item.task).text or "", item.ref_text or "")
            out.append(
                CandidateScore(
                    loop.kind if loop else "", bool(d["ended"]), len(d["body"]) / max(item.ref_len, 1), chrf
                )
            )
        speech = [i for i, item in enumerate(items) if item.output == "speech"]
        if speech and self.speech is not None and not self.speech.failed:
            codes = [self.fmt.parse(decoded[i]["ids"], items[i].task).codes for i in speech]
            try:
                waves = self.speech.waves(codes)
                if self.cfg.asr != "none":
                    for lang in sorted({items[i].lang for i in speech}):
                        mine = [j for j, i in enumerate(speech) if items[i].lang == lang]
                        texts = self.speech.transcribe_waves([waves[j] for j in mine], lang)
                        for j, text in zip(mine, texts, strict=True):
                            ref = items[speech[j]].ref_text or ""
                            out[speech[j]].chrf = sentence_chrf(normalize(text, lang), normalize(ref, lang))
                if self.speaker is not None:
                    self._speaker(items, speech, waves, out)
            except RuntimeError as err:
                self.speech.failed = True
                self.note(f"speech answers scored by the rules only: {err}")
        return out

    def _speaker(self, items, speech, waves, out) -> None:
        refs: dict[int, np.ndarray | None] = {}  # one reference embedding per prompt object
        for j, i in enumerate(speech):
            item = items[i]
            codes = (
                item.src_codes
                if self.cfg.speaker_reference == "source" and item.src_codes is not None
                else item.ref_codes
            )
            if id(item) not in refs:
                refs[id(item)] = (
                    self.speaker.embed(self.speech.waves([codes])[0]) if codes is not None else None
                )
            ref, emb = refs[id(item)], self.speaker.embed(waves[j]) if len(waves[j]) else None
            if ref is not None and emb is not None:
                out[i].speaker_sim = float(np.dot(ref, emb) / (np.linalg.norm(ref) * np.linalg.norm(emb)))


def answer_ids(decoded: dict, item: DevItem, end_of_turn_id: int) -> np.ndarray:
    """The answer as training sees it: a speech answer that ended gets the end-of-turn token after its
    speech end marker (SFT's assistant turn); a text answer already ends with it."""
    ids = np.asarray(decoded["ids"], dtype=np.int64)
    if decoded["ended"] and item.output == "speech":
        ids = np.append(ids, np.int64(end_of_turn_id))
    return ids


def _sample_chunk(
    cfg: PairConfig, k: int, chunk: list[DevItem], lm, fmt: TaskFormatter, scorer: _Scorer, pad_id: int
) -> None:
    """Sample, measure, score and pair one chunk; write its scores part, then its pairs part."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from train.gen_eval import decode

    expanded = [item for item in chunk for _ in range(cfg.samples)]
    settings = decode_settings(cfg, fmt.s2st_format, chunk_seed(cfg.seed, k))
    with torch.no_grad():
        decoded = decode(lm, expanded, tokenizer=fmt.tokenizer, vocab=fmt.vocab, pad_id=pad_id, cfg=settings)
    candidates = scorer.measure(expanded, decoded)
    score_rows, pair_rows = [], []
    for p, item in enumerate(chunk):
        mine = list(range(p * cfg.samples, (p + 1) * cfg.samples))
        score_all([candidates[i] for i in mine], cfg.scoring)  # per prompt: the answers pairs compare
        answers = [answer_ids(decoded[i], item, fmt.end_of_turn_id) for i in mine]
        for s, i in enumerate(mine):
            score_rows.append({"prompt_id": f"{item.row_id}/{item.group}", "row_id": item.row_id, "group": item.group,
                               "task": item.task, "sample": s, "steps": int(decoded[i]["steps"]),
                               **_measured(candidates[i])})  # fmt: skip
        chosen_rejected = select_pairs([candidates[i] for i in mine], cfg.scoring, pairs_per_prompt=cfg.pairs_per_prompt,
                                       same=lambda a, b, answers=answers: np.array_equal(answers[a], answers[b]))  # fmt: skip
        for n, (a, b) in enumerate(chosen_rejected):
            row = {"id": f"{item.row_id}/{item.group}/{n}", "row_id": item.row_id, "group": item.group,
                   "task": item.task, "src_lang": item.group.split(":")[1].split("-")[0], "tgt_lang": item.lang,
                   "prompt_ids": item.prompt.astype(np.int32), "chosen_ids": answers[a].astype(np.int32),
                   "rejected_ids": answers[b].astype(np.int32), "chosen_sample": a, "rejected_sample": b}  # fmt: skip
            for side, c in (("chosen", candidates[mine[a]]), ("rejected", candidates[mine[b]])):
                row.update({f"{side}_{key}": v for key, v in _measured(c).items()})
            pair_rows.append(row)
    for kind, rows, schema in ((SCORES_SUBDIR, score_rows, None), (PAIRS_SUBDIR, pair_rows, _pair_schema())):
        table = pa.Table.from_pylist(rows, schema=schema) if rows else (schema or pa.schema([])).empty_table()
        if schema is None and "speaker_sim" in table.column_names:  # all null in a chunk: still a float
            table = table.set_column(table.column_names.index("speaker_sim"), "speaker_sim",
                                     table["speaker_sim"].cast(pa.float64()))  # fmt: skip
        with atomic_open(_part(cfg, kind, k), "wb") as f:
            pq.write_table(table, f)


def _measured(c: CandidateScore) -> dict:
    nan = float("nan")
    return {"score": c.score, "loop": c.loop, "ended": c.ended, "length_ratio": c.length_ratio,
            "chrf": nan if c.chrf is None else c.chrf,
            "speaker_sim": c.speaker_sim, "speaker_counted": c.speaker_counted}  # fmt: skip


def _pair_schema():
    import pyarrow as pa

    ids = pa.list_(pa.int32())
    fields = [("id", pa.string()), ("row_id", pa.string()), ("group", pa.string()), ("task", pa.string()),
              ("src_lang", pa.string()), ("tgt_lang", pa.string()), ("prompt_ids", ids), ("chosen_ids", ids),
              ("rejected_ids", ids), ("chosen_sample", pa.int64()), ("rejected_sample", pa.int64())]  # fmt: skip
    for side in ("chosen", "rejected"):
        fields += [(f"{side}_score", pa.float64()), (f"{side}_loop", pa.string()), (f"{side}_ended", pa.bool_()),
                   (f"{side}_length_ratio", pa.float64()), (f"{side}_chrf", pa.float64()),
                   (f"{side}_speaker_sim", pa.float64()), (f"{side}_speaker_counted", pa.bool_())]  # fmt: skip
    return pa.schema(fields)


def pairs_card(cfg: PairConfig, prompts: int, notes: list[str]) -> dict:
    """The card of an output folder from all its part files (`train.pair_scores.summarize_scores`)."""
    import pyarrow.parquet as pq

    def read(kind: str) -> list[dict]:
        files = sorted((cfg.out_dir / kind).glob("part-*.parquet"))
        return [r for f in files for r in pq.read_table(f).to_pylist()]

    scores, pairs = read(SCORES_SUBDIR), read(PAIRS_SUBDIR)
    speaker = None
    if cfg.speaker:
        from sts.speaker import ENCODER as speaker
    return {
        "written_by": "sts-train dpo-pairs",
        "model": absolute_if_local(cfg.model),  # recorded paths resolve from anywhere (sts.paths)
        "shards": absolute_if_local([str(s) for s in cfg.shards]),
        "prompts": prompts,
        **summarize_scores(scores, pairs),
        "scoring": config_to_dict(cfg.scoring),
        "speaker_encoder": speaker,
        "notes": notes,
        "config": config_to_dict(cfg),
    }
