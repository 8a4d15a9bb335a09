"""A tiny random XCodec2 (every size shrunk, semantic sub-config included), built in well under a second."""

from __future__ import annotations

from pathlib import Path


def tiny_xcodec2_config(**overrides):
    """An `Xcodec2Config` with hop 320 at 16 kHz and 4**5 = 1,024 codes; `initializer_range=0.2` so codes vary."""
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
        encoder_hidden_size=8,
        downsampling_ratios=[2, 2, 4, 4, 5],
        semantic_model_config=semantic,
        quantization_dim=64 + 32,
        quantization_levels=[4] * 5,
        initializer_range=0.2,
    )
    fields.update(overrides)
    return Xcodec2Config(**fields)


def save_tiny_xcodec2(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Build a tiny random `Xcodec2Model` and `save_pretrained` it to `out_dir`; returns `out_dir`."""
    import torch
    from transformers import Xcodec2Model

    torch.manual_seed(seed)
    model = Xcodec2Model(tiny_xcodec2_config())
    model.save_pretrained(out_dir)
    return Path(out_dir)
