"""Tiny random models for tests and smoke runs: built from the real config classes, no download.

    from sts.testing import save_tiny_lfm2, save_tiny_xcodec2
    lm_dir = save_tiny_lfm2(tmp_path / "lm")          # Lfm2ForCausalLM + tokenizer, ~0.2M params
    codec_dir = save_tiny_xcodec2(tmp_path / "codec")  # Xcodec2Model, hop 320, 1,024 codes

Every test of every stage builds its models with these.
"""

import importlib

_EXPORTS = {
    "build_tiny_tokenizer": "sts.testing.lm",
    "save_tiny_lfm2": "sts.testing.lm",
    "tiny_lfm2_config": "sts.testing.lm",
    "save_tiny_xcodec2": "sts.testing.codec",
    "tiny_xcodec2_config": "sts.testing.codec",
    "synthetic_utterance": "sts.testing.audio",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Lazy: importing sts.testing must not pull in torch/transformers until a builder is used.
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sts.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
