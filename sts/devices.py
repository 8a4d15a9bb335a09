"""Where models run: the one option group for device, dtype and batch size (and the model and codec),
and how "auto" resolves.

    @dataclass(kw_only=True)
    class InferConfig(ModelArgs):          # --model --codec --device --dtype --batch-size, one spelling
        ...
    device = resolve_device(cfg.device)               # "auto" -> "cuda" when there is one, else "cpu"
    dtype = resolve_dtype(cfg.dtype, device)          # "auto" -> "bfloat16" on cuda, "float32" on cpu

Every command that loads a model takes these options from `DeviceArgs` / `ModelArgs`, so they are
spelled, documented, checked and resolved once. A command whose sensible default differs (a corpus
build batches 32 rows, the codec encodes in float32 so that its codes do not depend on the GPU)
declares the field again with its own default and the same type alias (`BatchSize`, `DType`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge

BatchSize = Annotated[int, Ge(1)]
"""A batch size: at least 1."""
DType = str
"""A torch dtype name ("float32", "bfloat16", "float16") or "auto"."""


@dataclass(kw_only=True)
class DeviceArgs:
    """Where the models of a command run."""

    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (cuda when available)."""
    dtype: DType = "auto"
    """float32, bfloat16, float16, or auto (bfloat16 on cuda, float32 on cpu)."""
    batch_size: BatchSize = 8
    """Inputs processed together."""

    def torch_device(self) -> str:
        return resolve_device(self.device)

    def torch_dtype(self) -> str:
        return resolve_dtype(self.dtype, self.torch_device())


@dataclass(kw_only=True)
class ModelArgs(DeviceArgs):
    """An sts checkpoint and its codec, and where they run."""

    model: str = "runs/sft"
    """Checkpoint folder or Hugging Face id (with sts_vocab.json)."""
    codec: str | None = None
    """Codec id or folder; default: the one sts_vocab.json records."""


def resolve_device(device: str) -> str:
    """`device`, with "auto" as "cuda" when torch sees a GPU, else "cpu"."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """`dtype`, with "auto" as "bfloat16" on a cuda device, else "float32"."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if resolve_device(device).startswith("cuda") else "float32"
