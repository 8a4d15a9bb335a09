"""`sts-eval --stream`: speech-to-speech outputs generated one at a time through `Translator.stream`,
with their streaming latency (`sts.latency`: SimulEval's StartOffset, EndOffset, ATD).

    results, latencies = run_streaming(translator, requests)

Each request is streamed at batch 1; the "done" event carries the same `Result` as `Translator.run`
(see `infer.stream`), so the quality scores are those of a batch-1 run. The model reads the whole
source before it speaks, so every chunk's SimulEval delay is the source length; the
computation-aware timestamps add the wall-clock seconds of each "audio" event since the request
started.
"""

from __future__ import annotations

import numpy as np

from sts.latency import SpeechOutputTrace, latency_scores

SAMPLE_RATE = 16000
"""`StreamEvent.audio` is 16 kHz (`infer.stream`)."""


def run_streaming(translator, requests) -> tuple[list, list[dict]]:
    """(one `Result` per request, one `sts.latency.latency_scores` dict per request; {} without audio)."""
    results, latencies = [], []
    for request in requests:
        chunks: list[tuple[float, float]] = []
        result = None
        for event in translator.stream(request):
            if event.kind == "audio" and event.audio is not None and len(event.audio):
                chunks.append((event.seconds, len(np.asarray(event.audio)) / SAMPLE_RATE))
            elif event.kind == "done":
                result = event.result
        results.append(result)
        source_seconds = len(request.wav) / SAMPLE_RATE
        latencies.append(
            latency_scores(SpeechOutputTrace.from_events(source_seconds, chunks)) if chunks else {}
        )
    return results, latencies
