"""Stage 3: add the speech tokens to a causal LM (`sts-extend-tokenizer BASE_MODEL -o OUT_DIR`).

    sts-extend-tokenizer LiquidAI/LFM2-350M -o runs/lfm2-350m-speech
    sts-extend-tokenizer HKUSTAudio/Llasa-1B -o runs/llasa-1b-adopted     # adopts Llasa's own speech block

See `tokenizer_ext.extend` for the library function and what the output folder holds, and
`tokenizer_ext.adopt` for adopting a model that already speaks.
"""

from sts.llasa_layout import LlasaLayoutError
from tokenizer_ext.extend import (
    AlreadyExtendedError,
    ExtendConfig,
    extend_tokenizer,
    layout_to_adopt,
    verify_extension,
)

__all__ = [
    "AlreadyExtendedError",
    "ExtendConfig",
    "LlasaLayoutError",
    "extend_tokenizer",
    "layout_to_adopt",
    "verify_extension",
]
