"""A tiny random XCodec2 for tests: the real `Xcodec2Config`/`Xcodec2Model`, every size shrunk.

    from sts.testing.codec import save_tiny_xcodec2
    codec = XCodec2Codec(save_tiny_xcodec2(tmp_path / "xcodec2"))   # 0.4M parameters, 1,024 codes

What must stay: hop 320 at 16 kHz (`downsampling_ratios` multiply to 320), `hidden_size` a multiple
of 32 (the decoder's GroupNorm has 32 groups), `quantization_dim` = `hidden_size` + the semantic
model's `hidden_size`, and `feature_projection_input_dim=160` (two stacked 80-bin mel frames). With
the default `initializer_range` every clip encodes to one repeated code; 0.2 gives varied codes.
"""

from __future__ import annotations

from pathlib import Path


def tiny_xcodec2_config(**overrides):
    """An `Xcodec2Config` with hop 320 at 16 kHz and `4**5 = 1,024` codes; `overrides` replace any field."""
    from transformers import Wav2Vec2BertConfig, Xcodec2Config

    semantic = Wav2Vec2BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        feature_projection_input_dim=160,
        output_hidden_size=32,
        conv_depthwise_kernel_size=3,
    )
    fields = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        encoder_hidden_size=2,  # the acoustic encoder runs at 16 kHz: its width is most of the cost
        downsampling_ratios=[2, 2, 4, 4, 5],
        semantic_model_config=semantic,
        quantization_dim=64 + 32,
        quantization_levels=[4] * 5,
        initializer_range=0.2,
    )
    fields.update(overrides)
    return Xcodec2Config(**fields)


def save_tiny_xcodec2(out_dir: str | Path, *, seed: int = 0, **overrides) -> Path:
    """Build a tiny random `Xcodec2Model` (seeded) and `save_pretrained` it to `out_dir`; returns `out_dir`."""
    import torch
    from transformers import Xcodec2Model

    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
        torch.manual_seed(seed)
        model = Xcodec2Model(tiny_xcodec2_config(**overrides))
    model.save_pretrained(out_dir)
    return Path(out_dir)
