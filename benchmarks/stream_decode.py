"""Chunked (streaming) decoding vs decoding the whole sequence, for the demo codec and the tiny XCodec2.

    python benchmarks/stream_decode.py --json out.json           # offline TTS speech (Kokoro ja, Piper en)
    python benchmarks/stream_decode.py --tiny                    # synthetic speech, no TTS (logic check)

Speech: `--pairs` sentence pairs of the bundled set (`sts/data/sentences.tsv`) spoken by the offline
TTS, joined per language `--join` at a time into utterances of a few seconds (what one generated
segment is like). Codecs: the demo codec (`MelKMeansCodec.fit` on those clips, 256 codes, as the
demo fits it on its corpus) and the tiny random XCodec2 (`sts.testing.save_tiny_xcodec2`).

Each utterance's codes are pushed one code at a time into `codec.stream_decoder(...)` (as the LM
writes them) for every setting `chunk/left/lookahead/crossfade`, and the joined audio is compared
with `codec.decode` of the whole: max abs and RMS difference (full scale 1.0; over all utterances)
and SNR in dB (all utterances' power over the difference's; and the worst utterance's). "decode
work" is the chunked decode's time over the whole decode's; "first audio" the frames (and ms at 50
frames/s) that must exist before the first chunk comes out. Numbers in `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from annotated_types import Ge

from sts.cli import parse_cli

DEMO_SETTINGS = [
    "20/25/15/2",
    "25/50/10/2",
    "25/25/5/2",
    "15/25/20/2",
    "10/25/25/2",
    "25/25/20/2",
    "50/50/10/4",
]
XCODEC2_SETTINGS = ["25/150/10/2", "25/50/10/2", "25/1000/10/2", "25/150/25/4", "50/150/50/4"]
"""The first of each list is the codec's `stream_defaults`."""


def speech(pairs: int, join: int, tiny: bool) -> list[np.ndarray]:
    """Utterances `[N]` float32 16 kHz: offline TTS sentences joined `join` at a time with 0.2 s pauses."""
    if tiny:
        from sts.testing import synthetic_utterance

        clips = [synthetic_utterance(1.5 + 0.5 * (i % 3), 110.0 + 20 * i, seed=i) for i in range(2 * pairs)]
    else:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from offline_codec_roundtrip import load_pairs

        from corpus_builder.interfaces import TTSRequest
        from corpus_builder.pipeline import to_16k
        from corpus_builder.tts import load_tts

        rows, tts, clips = load_pairs(pairs, 0), load_tts("offline"), []
        for lang in ("ja", "en"):
            results = tts.synthesize([TTSRequest(r[lang], lang) for r in rows])
            clips += [to_16k(r.audio, r.sample_rate) for r in results]
    pause = np.zeros(3200, np.float32)
    groups = [clips[i : i + join] for i in range(0, len(clips), join)]
    return [np.concatenate([x for clip in group for x in (clip, pause)][:-1]) for group in groups]


def measure(codec, codes: list[np.ndarray], setting: str) -> dict:
    from sts.codec.stream_decode import joined_difference

    chunk, left, ahead, fade = (int(x) for x in setting.split("/"))
    whole_s = stream_s = 0.0
    diffs, wholes, snrs, max_abs = [], [], [], 0.0
    for clip in codes:
        t0 = time.perf_counter()
        [whole] = codec.decode([clip])
        t1 = time.perf_counter()
        decoder = codec.stream_decoder(chunk, left, ahead, fade)
        joined = np.concatenate([decoder.push(clip[i : i + 1]) for i in range(len(clip))] + [decoder.flush()])
        t2 = time.perf_counter()
        whole_s, stream_s = whole_s + t1 - t0, stream_s + t2 - t1
        d = joined_difference(joined, whole)
        snrs.append(d["snr_db"])
        max_abs = max(max_abs, d["max_abs"])
        diffs.append(joined.astype(np.float64) - whole)
        wholes.append(whole.astype(np.float64))
    diff, whole = np.concatenate(diffs), np.concatenate(wholes)
    rms = float(np.sqrt(np.mean(diff**2)))
    return {
        "setting": setting,
        "first_audio_frames": chunk + ahead,
        "decode_work": round(stream_s / whole_s, 2),
        "max_abs": round(max_abs, 4),
        "rms": round(rms, 5),
        "snr_db": round(20 * np.log10(np.sqrt(np.mean(whole**2)) / max(rms, 1e-12)), 1),
        "worst_snr_db": round(min(snrs), 1),
    }


@dataclass
class Args:
    """Windowed streaming decode against the whole decode (see the module docstring)."""

    tiny: bool = False
    """Synthetic speech instead of TTS (no offline extra)."""
    pairs: Annotated[int, Ge(1)] = 16
    """Sentence pairs to speak (2 clips each)."""
    join: Annotated[int, Ge(1)] = 4
    """Clips per utterance."""
    demo_settings: list[str] = field(default_factory=lambda: list(DEMO_SETTINGS))
    """chunk/left/lookahead/fade settings of the demo codec."""
    xcodec2_settings: list[str] = field(default_factory=lambda: list(XCODEC2_SETTINGS))
    """The same for XCodec2."""
    json: Path | None = None
    """Also write the rows here."""


def main(argv: list[str] | None = None) -> dict:
    args = parse_cli(Args, argv, prog="benchmarks/stream_decode.py")

    import torch

    from sts.codec import XCodec2Codec
    from sts.codec.melkmeans import MelKMeansCodec
    from sts.testing import save_tiny_xcodec2

    torch.set_num_threads(1)
    utterances = speech(args.pairs, args.join, args.tiny)
    seconds = sum(len(u) for u in utterances) / 16000
    print(f"# {len(utterances)} utterances, {seconds:.1f} s of {'synthetic' if args.tiny else 'TTS'} speech")
    demo = MelKMeansCodec.fit(utterances, codebook_size=64 if args.tiny else 256, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tiny_xcodec2 = XCodec2Codec(save_tiny_xcodec2(Path(tmp) / "xcodec2"))
    rows = []
    print(f"{'codec':<16} {'chunk/left/ahead/fade':<22} {'first audio':>12} {'work':>6} {'max abs':>8} "
          f"{'RMS':>8} {'SNR dB':>7} {'worst':>6}")  # fmt: skip
    for name, codec, settings in (
        ("demo", demo, args.demo_settings),
        ("xcodec2-tiny", tiny_xcodec2, args.xcodec2_settings),
    ):
        codes = codec.encode(utterances)
        codec.decode([codes[0][:50]])  # warm-up: lazy imports, allocator
        for setting in settings:
            row = {"codec": name, **measure(codec, codes, setting)}
            rows.append(row)
            print(
                f"{name:<16} {setting:<22} {row['first_audio_frames']:>4} ({20 * row['first_audio_frames']} ms) "
                f"{row['decode_work']:>5}x {row['max_abs']:>8} {row['rms']:>8} {row['snr_db']:>7} "
                f"{row['worst_snr_db']:>6}"
            )
    result = {"utterances": len(utterances), "seconds": round(seconds, 1), "tiny": args.tiny, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
