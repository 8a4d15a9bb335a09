"""Stage 5: translate speech with a trained checkpoint (`sts-infer in.wav --to en -o out.wav`).

    sts-infer in.wav --to en -o out.wav --model runs/sft        # see `infer.cli` for every mode

    from infer import Request, Translator
    tr = Translator.from_checkpoint("runs/sft", device="cuda", fast=True)
    [result] = tr.run([Request("s2st", "ja", "en", wav=wav)])   # result.waveform / .text / .warnings

Modules: `translate` (the library: segment, encode, prompt, generate, cut loops, decode, join),
`translate_stream` (`Translator.stream`: one request's text, audio chunks and warnings while it is generated),
`decoding` (per-task sampling defaults, loop guards, length budgets from the source; the mechanisms
themselves, constrained decoding and the transformers/vLLM backends, are `sts.generation`),
`segment` (long-form splitting at pauses), `asr` (Whisper behind a small interface), `metrics`
(sacreBLEU BLEU/chrF, CER/WER), `checkpoint_eval` (`sts-eval`: ASR-BLEU, chrF, CER/WER, speaker similarity,
codec round trip, real-time factor, plot), `batch` (`sts-infer`'s output paths and batch
bookkeeping: unique names, each output committed with its results row), `mt_eval` / `mt_lines`
(`sts-eval-mt`, and its lines that cannot be translated).
Importing `infer` loads neither torch nor a model.
"""

from sts.lazy import lazy_exports

# Lazy, so that `sts-infer --help` and `import infer` do not pay for torch and transformers.
__all__, __getattr__ = lazy_exports(
    __name__, {"Request": "infer.translate", "Result": "infer.translate", "Translator": "infer.translate"}
)
