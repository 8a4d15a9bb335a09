"""Tiny random models for tests and smoke runs: built from the real config classes, no download.

    from sts.testing import save_tiny_lfm2, save_tiny_xcodec2
    lm_dir = save_tiny_lfm2(tmp_path / "lm")          # Lfm2ForCausalLM + tokenizer, ~0.2M params
    codec_dir = save_tiny_xcodec2(tmp_path / "codec")  # Xcodec2Model, hop 320, 1,024 codes

`sts.testing.numerics` derives test tolerances from the dtype and the reduction size.

Every test of every stage builds its models with these.
"""

from sts.lazy import lazy_exports

# Lazy: importing sts.testing must not pull in torch/transformers until a builder is used.
__all__, __getattr__ = lazy_exports(__name__, {
    "build_tiny_tokenizer": "sts.testing.lm",
    "save_tiny_lfm2": "sts.testing.lm",
    "tiny_lfm2_config": "sts.testing.lm",
    "save_tiny_xcodec2": "sts.testing.codec",
    "tiny_xcodec2_config": "sts.testing.codec",
    "synthetic_utterance": "sts.testing.audio",
    "assert_close_rounding": "sts.testing.numerics",
    "rounding_tolerance": "sts.testing.numerics",
})  # fmt: skip
