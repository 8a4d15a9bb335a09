"""Tiny local copies of FLEURS, CVSS-C, CoVoST 2 and FLORES+ in their published layouts (file names,
columns, audio encoding), built by the tests themselves: synthetic speech, sentences written here."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf

from sts.testing import synthetic_utterance

# (FLEURS id, Japanese sentence, English sentence); id 3 has no English recording in the test split.
SENTENCES = [
    ("1", "駅はどこですか。", "Where is the station?"),
    ("2", "今日は晴れです。", 'It is "sunny" today.'),
    ("3", "ありがとう。", None),
]


def wav_bytes(seconds: float, pitch: float, seed: int, rate: int = 16000, fmt: str = "WAV") -> bytes:
    wav = synthetic_utterance(seconds, pitch, seed=seed)
    if rate != 16000:
        import soxr

        wav = soxr.resample(wav, 16000, rate)
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wav, -1, 1), rate, format=fmt, subtype="PCM_16" if fmt == "WAV" else None)
    return buffer.getvalue()


def _tar_gz(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def fleurs_rows(lang: str) -> list[tuple[str, str, str, bytes]]:
    """(id, file name, raw transcription, wav bytes): two speakers read sentence 1."""
    rows = []
    for n, (sid, ja, en) in enumerate(SENTENCES):
        text = ja if lang == "ja" else en
        if text is None:
            continue
        speakers = 2 if sid == "1" else 1
        for s in range(speakers):
            name = f"{1000 + 10 * n + s + (0 if lang == 'ja' else 500)}.wav"
            rows.append((sid, name, text, wav_bytes(0.6 + 0.1 * n, 120.0 + 40 * s, seed=n * 7 + s)))
    return rows


def make_fleurs_original(root: Path, split: str = "test") -> Path:
    """`{root}/data/{config}/{split}.tsv` + `{root}/data/{config}/audio/{split}.tar.gz`, as on the hub's main."""
    for lang, config in (("ja", "ja_jp"), ("en", "en_us")):
        folder = root / "data" / config
        folder.mkdir(parents=True, exist_ok=True)
        lines, members = [], {}
        for sid, name, text, audio in fleurs_rows(lang):
            norm = text.lower().strip(".?")
            chars = " ".join("|".join(norm.split())) + " |"
            samples = sf.info(io.BytesIO(audio)).frames
            lines.append("\t".join([sid, name, text, norm, chars, str(samples), "FEMALE"]))
            members[f"{split}/{name}"] = audio
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        _tar_gz(
            folder / "audio" / f"{split}.tar.gz", dict(reversed(members.items()))
        )  # tar order != tsv order
    return root


def make_fleurs_parquet(root: Path, split: str = "test") -> Path:
    """`{root}/{config}/{split}/0000.parquet`, as the hub's refs/convert/parquet branch lays it out."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = datasets.Features(
        {
            "id": datasets.Value("int32"),
            "num_samples": datasets.Value("int32"),
            "path": datasets.Value("string"),
            "audio": datasets.Audio(sampling_rate=16000),
            "transcription": datasets.Value("string"),
            "raw_transcription": datasets.Value("string"),
            "gender": datasets.ClassLabel(names=["male", "female", "other"]),
            "lang_id": datasets.ClassLabel(names=["en_us", "ja_jp"]),
            "language": datasets.Value("string"),
            "lang_group_id": datasets.ClassLabel(names=["western_european_we", "cjk_languages"]),
        }
    )
    parquet_split = {"dev": "validation"}.get(split, split)
    for lang, config in (("ja", "ja_jp"), ("en", "en_us")):
        rows = fleurs_rows(lang)
        data = {
            "id": [int(r[0]) for r in rows],
            "num_samples": [sf.info(io.BytesIO(r[3])).frames for r in rows],
            "path": [f"{split}/{r[1]}" for r in rows],
            "audio": [{"bytes": r[3], "path": r[1]} for r in rows],
            "transcription": [r[2].lower() for r in rows],
            "raw_transcription": [r[2] for r in rows],
            "gender": [1] * len(rows),
            "lang_id": [1 if lang == "ja" else 0] * len(rows),
            "language": ["Japanese" if lang == "ja" else "English"] * len(rows),
            "lang_group_id": [1 if lang == "ja" else 0] * len(rows),
        }
        folder = root / config / parquet_split
        folder.mkdir(parents=True, exist_ok=True)
        rows_out = [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
        pq.write_table(pa.Table.from_pylist(rows_out, schema=features.arrow_schema), folder / "0000.parquet")
    return root


CV_CLIPS = [  # (clip file name, Japanese transcript, CVSS normalized translation, CoVoST 2 translation)
    ("common_voice_ja_100.mp3", "駅はどこですか", "where is the station", "Where is the station?"),
    ("common_voice_ja_101.mp3", "五ドルです", "it is five dollars", "It's $5."),
    ("common_voice_ja_102.mp3", "さようなら", "goodbye", "Goodbye."),
]


def make_common_voice(root: Path, *, missing: str = "common_voice_ja_102.mp3") -> Path:
    """`{root}/ja/clips/*.mp3` (48 kHz mp3) and `{root}/ja/validated.tsv` (Common Voice 4's columns)."""
    folder = root / "ja"
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    lines = ["client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent"]
    for n, (name, ja, _, _) in enumerate(CV_CLIPS):
        lines.append(f"c{n}\t{name}\t{ja}\t2\t0\t\t\t")
        if name != missing:
            (folder / "clips" / name).write_bytes(
                wav_bytes(0.7, 130.0 + 20 * n, seed=40 + n, rate=48000, fmt="MP3")
            )
    (folder / "validated.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def make_cvss(root: Path, split: str = "test") -> Path:
    """The unpacked `cvss_c_ja_en_v1.0.tar.gz`: `{split}.tsv` (clip, translation) and `{split}/{clip}.wav` (24 kHz)."""
    release = root / "cvss_c_ja_en_v1.0"
    (release / split).mkdir(parents=True, exist_ok=True)
    lines = []
    for n, (name, _, normalized, _) in enumerate(CV_CLIPS):
        lines.append(f"{name}\t{normalized}")
        (release / split / f"{name}.wav").write_bytes(wav_bytes(0.8, 180.0, seed=60 + n, rate=24000))
    (release / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return release


def make_covost2(root: Path) -> Path:
    """`covost_v2.ja_en.tsv` with CoVoST 2's header; rows in every split."""
    lines = ["path\tsentence\ttranslation\tclient_id\tsplit"]
    for n, (name, ja, _, translation) in enumerate(CV_CLIPS):
        lines.append(f"{name}\t{ja}\t{translation}\tc{n}\ttest")
    lines.append("common_voice_ja_200.mp3\tはい\tYes.\tc9\ttrain_covost")
    root.mkdir(parents=True, exist_ok=True)
    (root / "covost_v2.ja_en.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


FLORES_ROWS = [  # (id, url, Japanese, English): two articles
    (1, "https://en.wikinews.org/wiki/a", "今日は晴れです。", "It is sunny today."),
    (2, "https://en.wikinews.org/wiki/a", "明日は雨です。", "It will rain tomorrow."),
    (3, "https://en.wikivoyage.org/wiki/b", "駅はどこですか。", "Where is the station?"),
]


def make_flores_plus(root: Path, *, missing_en_id: int | None = None) -> Path:
    """A snapshot of `openlanguagedata/flores_plus` for two languages: a README declaring one config per
    language variety, `{split}/{config}.parquet` with its columns; the English side is shuffled."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    configs = {"jpn_Jpan": ("jpn", "Jpan", "nucl1643", 2), "eng_Latn": ("eng", "Latn", "stan1293", 3)}
    yaml = ["---", "configs:"]
    for config, (iso3, script, glotto, column) in configs.items():
        yaml += [f"- config_name: {config}", "  data_files:"]
        for split in ("dev", "devtest"):
            yaml += [f"  - split: {split}", f"    path: {split}/{config}.parquet"]
            rows = [r for r in FLORES_ROWS if not (config == "eng_Latn" and r[0] == missing_en_id)]
            if config == "eng_Latn":
                rows = rows[::-1]
            table = pa.table(
                {
                    "id": pa.array([r[0] for r in rows], pa.int64()),
                    "iso_639_3": [iso3] * len(rows),
                    "iso_15924": [script] * len(rows),
                    "glottocode": [glotto] * len(rows),
                    "text": [r[column] + ("" if split == "dev" else " (devtest)") for r in rows],
                    "url": [r[1] for r in rows],
                    "domain": ["wikinews"] * len(rows),
                    "topic": ["weather"] * len(rows),
                    "has_image": pa.array([False] * len(rows)),
                    "has_hyperlink": pa.array([False] * len(rows)),
                    "last_updated": ["2.1"] * len(rows),
                }
            )
            (root / split).mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / split / f"{config}.parquet")
    yaml += ["license: cc-by-sa-4.0", "---", "", "# FLORES+ (test copy)"]
    (root / "README.md").write_text("\n".join(yaml) + "\n", encoding="utf-8")
    return root
