"""The offline/demo codec: exact frame counts, tones survive the round trip, save/load, sts-fit-codec."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sts.audio import write_audio
from sts.codec import load_codec
from sts.codec.cli import main as fit_codec_main
from sts.codec.melkmeans import MelKMeansCodec

SR = 16000


def tone(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wav: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.fft.rfftfreq(len(wav), 1 / SR)[np.argmax(spectrum)])


@pytest.fixture(scope="module")
def tone_codec():
    return MelKMeansCodec.fit([tone(f, 1.0) for f in (300, 700, 1500, 3000)], codebook_size=8, seed=0)


def test_code_counts_are_exact(tone_codec):
    for n in (1, 319, 320, 321, 16000, 16001, 33333):
        [codes] = tone_codec.encode([np.zeros(n, np.float32) + 0.01])
        assert len(codes) == tone_codec.num_codes(n) == n // 320 + 1
        assert codes.dtype == np.int32
        [wav] = tone_codec.decode([codes])
        assert len(wav) == len(codes) * 320 and wav.dtype == np.float32


def test_tones_get_their_own_codes_and_keep_their_pitch(tone_codec):
    clips = [tone(f, 0.6) for f in (300, 700, 1500, 3000)]
    codes = tone_codec.encode(clips)
    # The steady middle of each tone maps to one code, and the four tones to four different codes.
    middles = [int(np.bincount(c[5:-5]).argmax()) for c in codes]
    assert len(set(middles)) == 4
    for c, m in zip(codes, middles, strict=True):
        assert np.mean(c[5:-5] == m) > 0.9
    for freq, wav in zip((300, 700, 1500, 3000), tone_codec.decode(codes), strict=True):
        assert abs(peak_hz(wav[1600:-1600]) - freq) < 0.1 * freq  # within a mel band of the original


def test_batches_equal_one_by_one(tone_codec):
    clips = [tone(440, 0.3), tone(1200, 0.9), tone(2500, 0.5)]
    batch = tone_codec.encode(clips)
    for clip, codes in zip(clips, batch, strict=True):
        np.testing.assert_array_equal(tone_codec.encode([clip])[0], codes)


def test_save_load_and_load_codec_detects_it(tone_codec, tmp_path):
    tone_codec.save(tmp_path / "codec")
    config = json.loads((tmp_path / "codec" / "codec.json").read_text())
    assert config["codec_type"] == "mel-kmeans" and config["codebook_size"] == 8
    loaded = load_codec(tmp_path / "codec", device="cpu", dtype="float32")  # XCodec2-style kwargs are ignored
    assert isinstance(loaded, MelKMeansCodec) and loaded.codebook_size == 8
    clip = tone(900, 0.4)
    np.testing.assert_array_equal(loaded.encode([clip])[0], tone_codec.encode([clip])[0])


def test_errors(tone_codec, tmp_path):
    with pytest.raises(ValueError, match="needs at least 64 frames"):
        MelKMeansCodec.fit([tone(300, 0.2)], codebook_size=64)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 8\)"):
        tone_codec.decode([np.array([0, 8])])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "codec.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable codec config"):
        MelKMeansCodec.load(tmp_path / "bad")


def test_fit_codec_cli_on_files_folders_and_a_corpus(tmp_path, capsys):
    from corpus_builder.build import BuildConfig, build_corpus
    from corpus_builder.testing import ToneTTS

    (tmp_path / "clips").mkdir()
    for i, f in enumerate((300, 600, 1200)):
        write_audio(tmp_path / "clips" / f"c{i}.wav", tone(f, 0.5), SR)
    (tmp_path / "ja.txt").write_text("こんにちは\nありがとう\n", encoding="utf-8")
    (tmp_path / "en.txt").write_text("hello\nthank you\n", encoding="utf-8")
    cfg = BuildConfig(
        out_dir=tmp_path / "corpus", source="text-pairs", path=str(tmp_path / "ja.txt"),
        tgt_path=str(tmp_path / "en.txt"), mt="reference", checks=["none"],
    )  # fmt: skip
    list(build_corpus(cfg, tts=ToneTTS(), argv=["test"]))
    out = tmp_path / "codec"
    assert (
        fit_codec_main(
            [str(tmp_path / "clips"), str(tmp_path / "corpus"), "-o", str(out), "--codebook-size", "16"]
        )
        == 0
    )
    assert "16 codes fitted on 7 clips" in capsys.readouterr().err  # 3 files + 2 rows x (src, tgt)
    assert load_codec(out).codebook_size == 16
    assert fit_codec_main([str(tmp_path / "clips"), "-o", str(out), "--codebook-size", "4096"]) == 2
    assert fit_codec_main([str(tmp_path / "nowhere"), "-o", str(out)]) == 2  # one line, no traceback
    assert "sts-fit-codec: error: " in (err := capsys.readouterr().err) and "nowhere: no such file" in err
    # a clip longer than all the audio the fit may use: refused from its header, one line
    assert fit_codec_main([str(tmp_path / "clips"), "-o", str(out), "--max-seconds", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "c0.wav: 0.5 s is longer than the 0.3 s limit (raise it with --max-seconds)" in err
