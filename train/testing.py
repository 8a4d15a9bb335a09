"""Small encoded corpus shards and tiny runs for tests and smoke runs, following `sts.corpus`.

from train.testing import write_tiny_encoded_shards
shards = write_tiny_encoded_shards(tmp_path / "encoded", num_codes=1024)   # [Path] to Parquet files
corpus = write_looping_shards(tmp_path / "looping")     # half the targets loop: for preference tests
main(tiny_cli_args("sft", model, shards, tmp_path / "run", "--optim.max-steps", "2"))   # sts-train sft
weights = checkpoint_weights(latest_checkpoint(tmp_path / "run"))   # {name: tensor}
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from sts.config import load_config
from sts.corpus import CARD_NAME, encoded_features, shard_dir
from sts.io import write_json_atomic
from train.config import CONFIG_DIR, TrainConfig

PAIRS = [
    ("おはようございます。", "Good morning."),
    ("駅はどこですか？", "Where is the station?"),
    ("切符を二枚ください。", "Two tickets, please."),
    ("ありがとう。", "Thank you."),
    ("公園まで歩きましょう。", "Let's walk to the park."),
    ("これはいくらですか？", "How much is this?"),
]


def write_tiny_encoded_shards(
    out_dir: str | Path,
    *,
    num_codes: int = 1024,
    rows_per_shard: int = 12,
    num_shards: int = 2,
    seed: int = 0,
    codec: str | None = "HKUSTAudio/xcodec2-hf",
) -> list[Path]:
    """Parquet shards with the encoded-corpus features: random int32 codes (10-30 frames), short texts.

    Rows alternate ja->en and en->ja; audio columns hold 10 ms of silence (training never reads them).
    Laid out as a corpus folder (`data/part-*.parquet`); `corpus.json` records each shard (`shards`)
    and, as `sts-encode` does, `codec` at 50 codes per second with
    `num_codes` codes (the default codec is what `sts-extend-tokenizer` records by default); None
    writes no card.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    wav = _silence_wav()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(num_shards):
        rows = []
        for r in range(rows_per_shard):
            ja, en = PAIRS[(s * rows_per_shard + r) % len(PAIRS)]
            src_lang, tgt_lang, src_text, tgt_text = (
                ("ja", "en", ja, en) if r % 2 == 0 else ("en", "ja", en, ja)
            )
            src_len, tgt_len = rng.integers(10, 30, size=2)
            rows.append(
                {
                    "id": f"tiny-{s}-{r}",
                    "src_lang": src_lang,
                    "tgt_lang": tgt_lang,
                    "src_text": src_text,
                    "tgt_text": tgt_text,
                    "src_audio": {"bytes": wav, "path": f"tiny-{s}-{r}-src.wav"},
                    "tgt_audio": {"bytes": wav, "path": f"tiny-{s}-{r}-tgt.wav"},
                    "src_duration": float(src_len) / 50,
                    "tgt_duration": float(tgt_len) / 50,
                    "speaker": "",
                    "source": "tiny",
                    "mt_backend": "reference",
                    "tts_backend": "none",
                    "tgt_asr_error": None,  # not checked: null, as the builder writes it
                    "speaker_similarity": None,
                    "src_codes": rng.integers(0, num_codes, size=src_len, dtype=np.int32).tolist(),
                    "tgt_codes": rng.integers(0, num_codes, size=tgt_len, dtype=np.int32).tolist(),
                }
            )
        path = shard_dir(out_dir) / f"part-{s:05d}-of-{num_shards:05d}.parquet"  # the corpus layout
        path.parent.mkdir(parents=True, exist_ok=True)
        # the features' arrow schema carries the `huggingface` metadata, so `datasets` opens it typed
        pq.write_table(pa.Table.from_pylist(rows, schema=encoded_features().arrow_schema), path)
        paths.append(path)
    if codec is not None:
        from sts.corpus import CARD_NAME
        from sts.io import write_json_atomic

        encode = {"codec": codec, "frame_rate": 50.0, "codebook_size": num_codes, "sample_rate": 16_000}
        card = {
            "rows": len(paths) * rows_per_shard,
            "shards": shard_entries(out_dir, paths),
            "encode": encode,
        }
        write_json_atomic(out_dir / CARD_NAME, card)
    return paths


def shard_entries(out_dir: Path, paths: list[Path]) -> list[dict]:
    """The card's `shards` records of `paths` (as `sts-build-corpus` and `sts-encode` write them)."""
    from sts.corpus import shard_record

    return [{"path": p.relative_to(out_dir).as_posix(), **shard_record(p)} for p in paths]


def write_looping_shards(
    out_dir: str | Path, *, num_codes: int = 64, rows: int = 16, clean_len: int = 60, seed: int = 0
) -> Path:
    """A corpus that teaches a model to loop half the time: one sentence pair in every row, whose
    speech (both sides) is a loop (`1 2 3 4` x 30: 120 codes, 2.4 s) in odd rows and `clean_len`
    random codes from [8, num_codes) in even rows, so the same prompt has both answers. Returns the
    corpus folder (`data/part-*.parquet` + `corpus.json`, as `write_tiny_encoded_shards`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    wav = _silence_wav()
    ja, en = PAIRS[0]
    table = []
    for r in range(rows):
        codes = rng.integers(8, num_codes, clean_len) if r % 2 == 0 else np.tile([1, 2, 3, 4], 30)
        codes = codes.astype(np.int32).tolist()
        table.append({"id": f"loop-{r}", "src_lang": "ja", "tgt_lang": "en", "src_text": ja, "tgt_text": en,
                      "src_audio": {"bytes": wav, "path": f"loop-{r}-src.wav"},
                      "tgt_audio": {"bytes": wav, "path": f"loop-{r}-tgt.wav"},
                      "src_duration": len(codes) / 50, "tgt_duration": len(codes) / 50, "speaker": "",
                      "source": "tiny", "mt_backend": "reference", "tts_backend": "none",
                      "tgt_asr_error": None, "speaker_similarity": None,
                      "src_codes": codes, "tgt_codes": codes})  # fmt: skip
    out_dir = Path(out_dir)
    path = shard_dir(out_dir) / "part-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(table, schema=encoded_features().arrow_schema), path)
    encode = {
        "codec": "HKUSTAudio/xcodec2-hf",
        "frame_rate": 50.0,
        "codebook_size": num_codes,
        "sample_rate": 16_000,
    }
    write_json_atomic(
        out_dir / CARD_NAME, {"rows": rows, "shards": shard_entries(out_dir, [path]), "encode": encode}
    )
    return out_dir


def _silence_wav() -> bytes:

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(160, dtype=np.float32), 16_000, format="WAV")
    return buf.getvalue()


def tiny_config(stage: str, model: str | Path, shards: list[str | Path], out_dir: str | Path, **overrides):
    """The shipped `tiny_{stage}.yaml` pointed at a tiny model, tiny shards and a run folder;
    `overrides` name options as `group__option` (`optim__lr=0.1` sets `optim.lr`)."""

    dotted = {key.replace("__", "."): value for key, value in overrides.items()}
    dotted = {"model": str(model), "data.shards": [str(s) for s in shards], "out_dir": str(out_dir), **dotted}
    return load_config(TrainConfig, CONFIG_DIR / f"tiny_{stage}.yaml", **dotted)


def tiny_cli_args(
    stage: str, model: str | Path, shards: list[str | Path], out_dir: str | Path, *extra: str
) -> list[str]:
    """`sts-train STAGE` arguments for the shipped `tiny_{stage}.yaml` on a tiny model, shards and run folder."""

    return [stage, "--config", str(CONFIG_DIR / f"tiny_{stage}.yaml"), "--model", str(model),
            "--data.shards", *map(str, shards), "--out-dir", str(out_dir), *extra]  # fmt: skip


def checkpoint_weights(checkpoint: str | Path) -> dict:
    """The tensors of a checkpoint's `model.safetensors`, by name."""
    from safetensors.torch import load_file

    return load_file(Path(checkpoint) / "model.safetensors")
