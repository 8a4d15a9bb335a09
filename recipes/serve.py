"""`sts serve`: a web demo of a checkpoint. Speak or upload Japanese or English; hear the translation
while it is generated; read the transcript and translation the model writes; download the result.

    sts serve                                       # the newest checkpoint of runs/demo (`make run` first)
    sts serve --model runs/sft --device cuda        # any checkpoint (its codec from sts_vocab.json)
    sts serve --model runs/sft --host 0.0.0.0 --max-seconds 20      # reachable from other machines

Then open http://127.0.0.1:7860. The page has a microphone and an upload box, the direction (auto
detects the source language with Whisper, `sts.asr.detect_language`), a live player that plays the
translated speech as it arrives, the transcript and translation boxes (filled when a text-first or
translation-first checkpoint writes them), Whisper's transcript of the translated speech (what it
really says; a tick box), the warnings (loops, length budget, the checkpoint's missing duration
ratios, silent output) and the final wav with its download, beside `result.json`.

Limits, each refused with one message naming the clip and the problem (`serve_service.read_input`): longer than
`--max-seconds` or bigger once decoded than that much 48 kHz stereo (both read from the file's header
before anything is decoded, `sts.audio.load_audio`), bigger than `--max-mb` (also enforced by the
upload itself), undecodable, shorter than 0.3 s, silent (`sts.audio.is_silent`), or a language that
cannot be told in auto mode. One translation at a time per page (a second click is refused,
`ClientGate`), one at a time on the model (the others wait in a queue of at most `--max-queue`).

Everything it writes lands under `--out-dir` (runs/serve): `outputs/<time>-<id>/` per translation
(`source.wav` as the model heard it, 16 kHz; `translation.wav`; `result.json`), Gradio's uploads
and cache in `gradio/` (`GRADIO_TEMP_DIR`, set before gradio is imported; uploads older than a day
are deleted hourly) and matplotlib's font cache in `matplotlib/` (Gradio imports it); onnxruntime's
telemetry, which would write to ~/.cache and TMPDIR, is off (`confine_writes`).

Why Gradio (6.x, the `serve` extra): researchers know it from Hugging Face Spaces, and it brings
in-browser microphone recording, upload with a size limit, a queue with per-event concurrency
limits, generator handlers whose every yield updates the page, and download buttons, in one pip
package with no front-end build. Its own streaming audio output (`gr.Audio(streaming=True)`) pipes
the stream through an ffmpeg subprocess to AAC (gradio's `audio_stream_encoder.py`), and ffmpeg is
not a pip package; so the live player here is a small `gr.HTML` whose script schedules each new
16-bit PCM chunk on a Web Audio `AudioContext`: gapless, no ffmpeg anywhere.

The logic lives in `recipes.serve_service` (no gradio): `TranslationService.translate` yields
`Update`s that this page shows. Element ids the browser test (`tests/test_serve_browser.py`) finds:
`source-audio`, `direction`, `transcribe`, `translate`, `live` (data-chunks: speech chunks queued,
data-samples: their samples), `transcript`, `translation`, `heard`, `warnings`, `result-audio`,
`downloads`.
"""

# No `from __future__ import annotations`: Gradio finds the `gr.Request` parameter of the click handler
# by its evaluated annotation.
import base64
import html
import os
import sys
import traceback
import uuid
from pathlib import Path

import numpy as np

from recipes.serve_service import (
    DIRECTIONS,
    SAMPLE_RATE,
    ServeError,
    TranslationService,
    Update,
)

DELETE_UPLOADS = (3600, 24 * 3600)
"""Gradio deletes its uploads and cache files older than a day, checking hourly (`gr.Blocks(delete_cache=)`)."""

# Each update carries every chunk so far (Gradio sends a generator's outputs as diffs, so only the
# new chunks travel); the script queues the ones it has not played, so updates the page coalesces
# lose nothing. A new run id stops the previous run's sound.
PLAYER_JS = """
let ctx = null, run = null, played = 0, next = 0, sources = [], samples = 0;
watch('value', () => {
  const v = props.value;
  if (!v || !v.chunks) return;
  if (v.run !== run) {
    sources.forEach((s) => { try { s.stop(); } catch (e) {} });
    run = v.run; played = 0; next = 0; sources = []; samples = 0;
  }
  for (; played < v.chunks.length; played++) {
    const bytes = Uint8Array.from(atob(v.chunks[played]), (c) => c.charCodeAt(0));
    const pcm = new Int16Array(bytes.buffer);
    if (!pcm.length) continue;
    ctx = ctx || new (window.AudioContext || window.webkitAudioContext)();
    if (ctx.state === 'suspended') ctx.resume();
    const buffer = ctx.createBuffer(1, pcm.length, v.rate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    next = Math.max(next, ctx.currentTime + 0.05);
    source.start(next);
    next += buffer.duration;
    sources.push(source);
    samples += pcm.length;
  }
  element.dataset.chunks = String(played);
  element.dataset.samples = String(samples);
});
"""
PLAYER_TEMPLATE = (
    "<div class='sts-live'><span class='sts-live-title'>Live</span> {{#if value}}${value.label}"
    "{{else}}the translated speech plays here while it is generated{{/if}}</div>"
)
CSS = (
    ".sts-live { padding: 0.7em 0.9em; min-height: 2.6em; border: 1px solid var(--border-color-primary);"
    " border-radius: var(--radius-lg); background: var(--block-background-fill); }"
    " .sts-live-title { font-weight: 600; margin-right: 0.5em; }"
)


def confine_writes(run_dir: Path) -> None:
    """Point what the server's libraries write at `run_dir`, before they are imported: Gradio's uploads
    and cache (`run_dir/gradio`: GRADIO_TEMP_DIR is read when gradio is imported), matplotlib's font
    cache (`run_dir/matplotlib`, unless MPLCONFIGDIR is set: Gradio imports matplotlib for every event
    when it is installed); and turn off the telemetry of Gradio and of onnxruntime (which the Whisper
    VAD runs on; its 1DS telemetry keeps a device id in ~/.cache and a session file in TMPDIR).
    Raises RuntimeError if gradio was imported before with another folder."""
    run_dir = Path(run_dir).resolve()
    cache_dir = str(run_dir / "gradio")
    if "gradio" in sys.modules and os.environ.get("GRADIO_TEMP_DIR") != cache_dir:
        raise RuntimeError(f"gradio was imported before sts serve could put its cache in {cache_dir}")
    os.environ["GRADIO_TEMP_DIR"] = cache_dir
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("MPLCONFIGDIR", str(run_dir / "matplotlib"))
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def import_gradio(run_dir: Path):
    """gradio, imported after `confine_writes(run_dir)`."""
    confine_writes(run_dir)
    import gradio as gr

    return gr


def pcm16_base64(chunk: np.ndarray) -> str:
    """`[N]` float speech -> base64 of its 16-bit little-endian PCM (what the player script decodes)."""
    pcm = np.round(np.clip(np.asarray(chunk, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
    return base64.b64encode(pcm.tobytes()).decode("ascii")


def player_label(update: Update) -> str:
    """The live player's line: direction and progress (HTML-escaped: file names come from users)."""
    parts = [update.direction, update.status]
    if update.first_audio_seconds is not None:
        parts.append(f"first speech after {update.first_audio_seconds:.1f} s")
    return html.escape(" · ".join(p for p in parts if p))


def page_state(update: Update, chunks: list[str]) -> tuple:
    """The outputs of a click after `update`: the player's value (every chunk so far, base64 PCM),
    transcript, translation, Whisper's transcript of the speech, warnings, the final wav and the
    files to download (None until done)."""
    player = {"run": update.run, "rate": SAMPLE_RATE, "chunks": list(chunks), "label": player_label(update)}
    warnings = "\n".join(f"⚠ {w}" for w in update.warnings) or ("no warnings" if update.done else "")
    return (
        player,
        update.transcript or "",
        update.translation or "",
        update.heard or "",
        warnings,
        str(update.audio_path) if update.audio_path else None,
        [str(p) for p in update.files] or None,
    )


def header(service: TranslationService) -> str:
    cfg = service.cfg
    writes = {
        "text-first": "writes the transcript and the translation before its speech",
        "translation-first": "writes the translation before its speech",
        "direct": "writes speech only",
    }.get(service.s2st_format, service.s2st_format)
    lines = [
        "## sts serve: Japanese ↔ English speech-to-speech translation",
        f"Model `{service.model}` (s2st format **{service.s2st_format}**: {writes}) on `{cfg.device}`. "
        f"Clips up to {cfg.max_seconds:g} s and {cfg.max_mb:g} MB; one translation at a time per page. "
        f"Every result is kept in `{Path(cfg.out_dir) / 'outputs'}`.",
    ]
    lines += [f"⚠ {note}" for note in service.notes()]
    return "\n\n".join(lines)


def build_app(service: TranslationService):
    """The Gradio Blocks page over `service` (not launched)."""
    gr = import_gradio(service.run_dir)
    direct = service.s2st_format == "direct"
    speech_only = "this checkpoint writes speech only (s2st format: direct)"

    with gr.Blocks(title="sts serve", delete_cache=DELETE_UPLOADS) as app:
        gr.Markdown(header(service))
        with gr.Row():
            with gr.Column():
                source = gr.Audio(
                    sources=["microphone", "upload"],
                    type="filepath",
                    label=f"Your speech (Japanese or English, up to {service.cfg.max_seconds:g} s)",
                    elem_id="source-audio",
                )
                direction = gr.Radio(list(DIRECTIONS), value="auto", label="Direction", elem_id="direction")
                transcribe = gr.Checkbox(
                    True, label="Transcribe the translated speech with Whisper", elem_id="transcribe"
                )
                button = gr.Button("Translate", variant="primary", elem_id="translate")
            with gr.Column():
                live = gr.HTML(
                    None, html_template=PLAYER_TEMPLATE, js_on_load=PLAYER_JS, elem_id="live", padding=False
                )
                transcript = gr.Textbox(
                    label="Transcript (what the model heard)",
                    placeholder=speech_only if direct else "",
                    interactive=False,
                    elem_id="transcript",
                )
                translation = gr.Textbox(
                    label="Translation (what the model will say)",
                    placeholder=speech_only if direct else "",
                    interactive=False,
                    elem_id="translation",
                )
                heard = gr.Textbox(
                    label="What the speech says (Whisper's transcript of it)",
                    placeholder="tick the box on the left to see it",
                    interactive=False,
                    elem_id="heard",
                )
                warnings = gr.Textbox(label="Warnings", lines=2, interactive=False, elem_id="warnings")
                result = gr.Audio(
                    label="Translated speech", type="filepath", interactive=False, elem_id="result-audio"
                )
                files = gr.File(
                    label="Download", file_count="multiple", interactive=False, elem_id="downloads"
                )

        def on_translate(audio_path, choice, transcribe_output, request: gr.Request):
            client = getattr(request, "session_hash", None) or uuid.uuid4().hex
            chunks: list[str] = []
            try:
                for update in service.translate(
                    audio_path, choice, client, transcribe_output=transcribe_output
                ):
                    if update.chunk is not None:
                        chunks.append(pcm16_base64(update.chunk))
                    yield page_state(update, chunks)
            except ServeError as err:
                raise gr.Error(html.escape(str(err)), duration=None, title="Cannot translate") from None
            except (
                Exception
            ) as err:  # a model or codec failure: say so on the page, the trace goes to the log
                traceback.print_exc()
                message = (
                    f"translation failed ({type(err).__name__}: {err}); the server's log has the details"
                )
                raise gr.Error(html.escape(message), duration=None, title="Translation failed") from None

        button.click(
            on_translate,
            inputs=[source, direction, transcribe],
            outputs=[live, transcript, translation, heard, warnings, result, files],
            concurrency_limit=1,
            show_progress="minimal",
        )
    return app


def launch(app, service: TranslationService) -> None:
    """Serve `app` (blocks until interrupted): one translation at a time on the model, a bounded queue,
    uploads capped at `--max-mb`, files served only from the app's cache and its outputs folder."""
    cfg = service.cfg
    gr = import_gradio(service.run_dir)
    app.queue(default_concurrency_limit=1, max_size=cfg.max_queue).launch(
        server_name=cfg.host,
        server_port=cfg.port,
        share=cfg.share,
        max_file_size=service.limits.max_bytes,
        allowed_paths=[str(service.outputs)],
        css=CSS,
        theme=gr.themes.Default(),
        show_error=False,
    )
