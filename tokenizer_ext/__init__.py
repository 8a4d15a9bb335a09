"""Stage 3: add the speech tokens to a causal LM (`sts-extend-tokenizer BASE_MODEL OUT_DIR`).

    sts-extend-tokenizer LiquidAI/LFM2-350M runs/lfm2-350m-speech

See `tokenizer_ext.extend` for the library function and what the output folder holds.
"""

from tokenizer_ext.extend import AlreadyExtendedError, ExtendConfig, extend_tokenizer, verify_extension

__all__ = ["AlreadyExtendedError", "ExtendConfig", "extend_tokenizer", "verify_extension"]
