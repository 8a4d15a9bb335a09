"""The demo's translation and scoring: s2st both ways on held-out and training sentences, scored with
offline Whisper against the references and against the codec's own ceiling.

    items, rtf = translate_examples(out, checkpoint, codec_dir, corpora, n=8, decoding="default")
    evaluation = evaluate_outputs(out, items, codec, corpora["test"])

`decoding`: "default" (the checkpoint's own: repetition-aware sampling for speech, the s2tt sampling
for a text-first answer's texts), "greedy", "plain" (nucleus sampling at temperature 0.8, top-p 0.95,
no repetition awareness: the setting before repetition-aware sampling became the default), "ras"
(repetition-aware sampling for speech, greedy texts) or "ras-t<T>" (the same at temperature T, e.g.
"ras-t0.4", the domain recipe's: benchmarks/RESULTS.md). Shared by `sts demo` and
`benchmarks/s2st_ablation.py`, so the demo's numbers and the ablation's are one computation.

Per group (split x direction): ASR-BLEU / ASR-chrF++ of the output speech by the SeamlessM4T
protocol (`sts.metrics.asr_bleu`), the ceiling (the same score for the reference target speech after
the codec round trip: what a model that reproduced its targets exactly would get), the loop rate
(outputs a loop rule cut), the end-marker rate (outputs that ended themselves), and, for a text-first
or translation-first checkpoint, the raw-text chrF++ of the translation it wrote before its speech
(translating), the ASR-chrF++ of its speech against that translation (speaking) and, text-first, the
error of the transcript it wrote (hearing: CER ja, WER en; a missing transcript counts as all wrong).
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
import weakref
from pathlib import Path

import numpy as np

from infer.translate import replace_sampling
from sts.asr import FasterWhisperASR
from sts.audio import load_audio, write_audio
from sts.corpus import read_rows
from sts.generation.request import RAS_SAMPLING, Sampling
from sts.metrics import asr_bleu, asr_error, chrf
from sts.speaker import ENCODER, SpeakerEncoder

DECODINGS = ("default", "greedy", "plain", "ras")
"""The named decodings; besides them "ras-t<T>" (`ras_temperature`)."""
PLAIN_SAMPLING = Sampling(temperature=0.8, top_p=0.95)
"""The "plain" decoding's nucleus sampling (the setting before repetition-aware sampling)."""
LOOP_RULES = ("exact", "approximate", "long_repeat", "low_diversity")


def ras_temperature(decoding: str) -> float | None:
    """T of a "ras-t<T>" decoding (repetition-aware sampling of the speech at temperature T > 0, the
    rest of `RAS_SAMPLING` as it is; greedy texts), else None. One spelling per temperature ("ras-t0.4",
    not "ras-t0.40" or "ras-t.4"), so one temperature is one result key and one outputs folder."""
    match = re.fullmatch(r"ras-t(\d+(?:\.\d+)?)", decoding)
    value = float(match[1]) if match else 0.0
    return value if value > 0 and decoding == f"ras-t{value:g}" else None


def decoding_problem(decoding: str) -> str | None:
    """Why `decoding` is not one `translate_examples` knows (None: it is)."""
    if decoding in DECODINGS or ras_temperature(decoding) is not None:
        return None
    return f"must be one of {list(DECODINGS)} or ras-t<temperature> (e.g. ras-t0.4), got {decoding!r}"


def describe_decoding(decoding: str) -> str:
    """A report's words for `decoding`. Raises ValueError for one `translate_examples` does not know."""
    if problem := decoding_problem(decoding):
        raise ValueError(f"decoding {problem}")
    r = RAS_SAMPLING
    ras = (f"repetition-aware sampling of the speech (top-k {r.top_k}, top-p {r.top_p:g}, window {r.ras_window}, "
           f"tau {r.ras_tau:g}; CosyVoice 2's)")  # fmt: skip
    if decoding == "default":
        return (
            f"the package's defaults: {ras} at temperature {r.temperature:g}, texts as sts-infer samples them"
        )
    if decoding == "greedy":
        return "greedy"
    if decoding == "plain":
        return (
            f"nucleus sampling at temperature {PLAIN_SAMPLING.temperature:g}, top-p {PLAIN_SAMPLING.top_p:g}"
        )
    temperature = r.temperature if decoding == "ras" else ras_temperature(decoding)
    return f"{ras} at temperature {temperature:g}, greedy texts"


def _set_decoding(translator, decoding: str) -> None:
    if problem := decoding_problem(decoding):
        raise ValueError(f"decoding {problem}")
    if decoding == "greedy":
        translator.sampling = {
            t: replace_sampling(s, do_sample=False) for t, s in translator.sampling.items()
        }
    elif decoding == "plain":
        translator.sampling["s2st"] = PLAIN_SAMPLING
        translator.sampling["s2tt"] = PLAIN_SAMPLING
    elif decoding != "default":  # "ras", "ras-t<T>"
        temperature = RAS_SAMPLING.temperature if decoding == "ras" else ras_temperature(decoding)
        translator.sampling["s2st"] = replace_sampling(RAS_SAMPLING, temperature=temperature)
        translator.sampling["s2tt"] = Sampling(do_sample=False)


def translate_examples(
    out: Path,
    checkpoint,
    codec_dir: Path,
    corpora: dict[str, Path],
    n: int | dict[str, int],
    *,
    decoding: str = "default",
    seed: int = 0,
    audio_dir: str = "outputs",
) -> tuple[list[dict], float]:
    """s2st ja->en and en->ja on the first `n` held-out ("test") and `n` training rows, or on the
    first `n[name]` rows of each corpus `n` names; writes wavs under `out/audio_dir`. Returns one
    dict per output and the real-time factor of the whole batch."""
    from infer import Request, Translator

    translator = Translator.from_checkpoint(checkpoint, codec=str(codec_dir), seed=seed)
    _set_decoding(translator, decoding)
    counts = n if isinstance(n, dict) else {"test": n, "train": n}
    items, requests = [], []
    for split, count in counts.items():
        for row in read_rows(corpora[split])[:count]:
            for src, tgt in (("ja", "en"), ("en", "ja")):
                side = "src" if src == row["src_lang"] else "tgt"
                other = "tgt" if side == "src" else "src"
                items.append(
                    {
                        "split": split,
                        "id": f"{row['id']}-{src}{tgt}",
                        "src_lang": src,
                        "tgt_lang": tgt,
                        "source_text": row[f"{side}_text"],
                        "reference_text": row[f"{other}_text"],
                        "reference_audio": row[f"{other}_audio"]["bytes"],
                    }
                )
                requests.append(Request("s2st", src, tgt, wav=load_audio(row[f"{side}_audio"]["bytes"])))
    started = time.perf_counter()
    results = translator.run(requests)
    seconds = time.perf_counter() - started
    folder = out / audio_dir
    folder.mkdir(parents=True, exist_ok=True)
    for item, request, result in zip(items, requests, results, strict=True):
        src_path, out_path = folder / f"{item['id']}.source.wav", folder / f"{item['id']}.output.wav"
        write_audio(src_path, request.wav)  # decoded once, for the request
        waveform = result.waveform if result.waveform is not None else np.zeros(0, np.float32)
        if len(waveform):
            write_audio(out_path, waveform)
        item.update(
            source_wav=str(src_path.relative_to(out)),
            output_wav=str(out_path.relative_to(out)) if len(waveform) else None,
            output_seconds=len(waveform) / 16000,
            source_seconds=result.source_seconds,
            finished=result.finished,
            cut=result.cut,
            transcript=result.transcript,
            translation=result.translation,
            warnings=list(result.warnings),
        )
    total_audio = sum(i["source_seconds"] for i in items) or 1.0
    return items, seconds / total_audio


def evaluate_outputs(out: Path, items: list[dict], codec, test_corpus: Path, *, speaker: bool = True) -> dict:
    """ASR-BLEU / ASR-chrF++ of the outputs against the references and against the codec's ceiling,
    loop and end-marker rates, the chain's translation chrF++, speaker similarity source -> output,
    and the codec round trip on the held-out references.

    The same functions as `sts-eval`: `sts.asr` (offline Whisper, greedy, silence -> ""),
    `sts.metrics.asr_bleu` (the SeamlessM4T protocol: normalized, lowercased, `char` for Japanese)
    and `sts.speaker`. Adds `asr_text` (and `speaker_similarity`) to each item and drops its
    `reference_audio` bytes. Without faster-whisper there is no ASR and the result says so.
    """

    try:
        asr = _whisper()
    except ImportError:
        asr = None
    result: dict = {"asr": asr is not None}
    if asr is None:
        for item in items:
            item.pop("reference_audio", None)
        result["note"] = "faster-whisper is not installed: no ASR-based scores (install the offline extra)"
        return result
    for item in items:
        wav = load_audio(out / item["output_wav"]) if item["output_wav"] else np.zeros(0, np.float32)
        item["asr_text"] = asr.transcribe([wav], item["tgt_lang"])[0]
    groups: dict[str, dict] = {}
    for split in dict.fromkeys(i["split"] for i in items):
        for src, tgt in (("ja", "en"), ("en", "ja")):
            chosen = [i for i in items if i["split"] == split and i["src_lang"] == src]
            if not chosen:
                continue
            hyps, refs = [i["asr_text"] for i in chosen], [i["reference_text"] for i in chosen]
            # The ceiling: the reference target speech through the codec, heard by the same ASR.
            ceiling = _ceiling(codec, asr, chosen, tgt)
            scores = asr_bleu(hyps, refs, tgt)
            group = {
                "n": len(chosen),
                "scores": {s.name: round(s.score, 2) for s in scores},
                "ceiling": ceiling,
                "signatures": {s.name: s.signature for s in scores},
                "protocols": {s.name: s.protocol for s in scores},
                "asr_error_vs_reference": round(
                    float(np.mean([asr_error(r, h, tgt) for r, h in zip(refs, hyps, strict=True)])), 3
                ),
                "loop_rate": round(float(np.mean([i["cut"] in LOOP_RULES for i in chosen])), 3),
                "end_marker_rate": round(float(np.mean([i["finished"] for i in chosen])), 3),
            }
            translations = [i.get("translation") for i in chosen]
            if any(t is not None for t in translations):
                group["translation_chrf++"] = round(chrf([t or "" for t in translations], refs).score, 2)
                # speaking: what Whisper hears in the speech against the translation the model wrote first
                own = [t or "" for t in translations]
                group["speech_vs_own_translation_chrf++"] = round(
                    next(s.score for s in asr_bleu(hyps, own, tgt) if s.name == "chrF++"), 2
                )
            transcripts = [i.get("transcript") for i in chosen]
            if any(t is not None for t in transcripts):  # hearing: the chain's own transcript of the source
                group["transcript_error"] = round(float(np.mean(
                    [asr_error(i["source_text"], i.get("transcript") or "", src) for i in chosen])), 3)  # fmt: skip
            groups[f"{split} {src}->{tgt}"] = group
    for item in items:
        item.pop("reference_audio", None)
    result["asr_bleu"] = groups
    if speaker:
        result |= _speaker_similarity(out, items)
    result["codec_round_trip"] = _once(
        codec, ("round_trip", str(test_corpus)), lambda: _codec_round_trip(codec, test_corpus, asr)
    )
    return result


# The ceiling and the codec round trip depend only on the references, the codec and the scoring ASR
# (one per process): an ablation scoring many checkpoints on one held-out set computes them once.
_SCORED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # codec -> {key: result}


@functools.cache
def _whisper():
    """The scoring ASR (offline Whisper, greedy: the protocol's decoding), loaded once per process."""
    return FasterWhisperASR(compute_type="int8", beam_size=1)


def _once(codec, key: tuple, compute):
    done = _SCORED.setdefault(codec, {})
    if key not in done:
        done[key] = compute()
    return done[key]


def _ceiling(codec, asr, chosen: list[dict], tgt: str) -> dict:
    """The scores of the reference target speech after the codec round trip (what a model that
    reproduced its targets exactly would get), heard by the same ASR."""
    refs = [i["reference_text"] for i in chosen]
    heard = _heard_through_codec(codec, asr, [i["reference_audio"] for i in chosen], tgt)
    return {s.name: round(s.score, 2) for s in asr_bleu(heard, refs, tgt)}


def _heard_through_codec(codec, asr, clips: list[bytes], lang: str) -> list[str]:
    """What the ASR hears in each encoded clip after the codec round trip, each clip transcribed once
    per process: the ceiling and the codec round-trip table share the held-out references' audio."""
    done = _SCORED.setdefault(codec, {})
    keys = [("heard", lang, hashlib.sha1(clip).hexdigest()) for clip in clips]
    todo = list({key: i for i, key in enumerate(keys) if key not in done}.values())  # one per clip
    if todo:
        resynth = codec.decode(codec.encode([load_audio(clips[i]) for i in todo]))
        for i, text in zip(todo, asr.transcribe(resynth, lang), strict=True):
            done[keys[i]] = text
    return [done[key] for key in keys]


def _speaker_similarity(out: Path, items: list[dict]) -> dict:
    """Source-vs-output speaker similarity per item (`item["speaker_similarity"]`), its mean over the
    scored items, how many were scored and how many were not: no output, output under 0.5 s, or
    under `sts.speaker.MIN_VOICED_SECONDS` of voice on either side (`similarity` gives None)."""

    try:
        speaker = SpeakerEncoder()
    except ImportError:
        return {"speaker_encoder": None}
    sims = []
    for item in items:
        if item["output_wav"] and item["output_seconds"] > 0.5:
            sim = speaker.similarity(
                load_audio(out / item["source_wav"]), load_audio(out / item["output_wav"])
            )
            if sim is not None:
                item["speaker_similarity"] = round(sim, 3)
                sims.append(item["speaker_similarity"])
    return {
        "speaker_encoder": ENCODER,
        "speaker_similarity_mean": round(float(np.mean(sims)), 3) if sims else None,
        "speaker_scored": len(sims),
        "speaker_unscored": len(items) - len(sims),
    }


def _codec_round_trip(codec, test_corpus: Path, asr) -> dict:
    """What the codec alone costs: ASR error of the held-out references before and after a round trip."""

    rows = read_rows(test_corpus)
    round_trip = {}
    for lang, side in (("ja", "src"), ("en", "tgt")):
        clips = [r[f"{side}_audio"]["bytes"] for r in rows]
        texts = [r[f"{side}_text"] for r in rows]

        def error(heard, lang=lang, texts=texts):
            return round(
                float(np.mean([asr_error(t, h, lang) for t, h in zip(texts, heard, strict=True)])), 3
            )

        round_trip[lang] = {
            "metric": "CER" if lang == "ja" else "WER",
            "reference_audio": error(asr.transcribe([load_audio(c) for c in clips], lang)),
            "codec_round_trip": error(_heard_through_codec(codec, asr, clips, lang)),
        }
    return round_trip
