"""sts: direct Japanese<->English speech-to-speech translation with a codec-token language model.

The shared layer of every stage: audio I/O (`sts.audio`), the speech codec (`sts.codec`), the
vocabulary contract (`sts.vocab`), the task formats (`sts.tasks`), constrained generation on
transformers or vLLM (`sts.generation`) and tiny random models for tests (`sts.testing`).
Importing `sts` is cheap: submodules load torch/transformers only when used.
"""

__version__ = "0.1.0"

LANGUAGES = ("ja", "en")
"""Languages the package translates between (ISO 639-1)."""
