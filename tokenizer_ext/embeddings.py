"""Grow a causal LM's embedding matrices, the new rows starting at the mean of trained ones.

    rows = grow_embeddings(model, new_rows=1536, keep_rows=1410, mean_rows=1400)

Shared by extension (rows from the base's text vocabulary on are new) and adoption (only rows past
the base's matrix are new). Mean-initialised rows give ordinary first logits rather than huge or
tiny ones. Input and output matrices (and an output bias) are both set; tied ones stay tied.
"""

from __future__ import annotations


def grow_embeddings(model, new_rows: int, *, keep_rows: int, mean_rows: int) -> int:
    """Resize `model`'s vocabulary to `new_rows`; rows `[keep_rows, new_rows)` become the mean of
    rows `[0, mean_rows)`, rows below `keep_rows` are untouched. Returns `new_rows`.

    `new_rows` may be below the current size only if `keep_rows` <= `new_rows`.
    """
    import torch

    model.resize_token_embeddings(new_rows, mean_resizing=False)
    with torch.no_grad():
        matrices = [model.get_input_embeddings().weight]
        output = model.get_output_embeddings()
        if output is not None and output.weight is not matrices[0]:
            matrices.append(output.weight)
        for weight in matrices:
            weight[keep_rows:] = weight[:mean_rows].mean(dim=0, keepdim=True)
        bias = getattr(output, "bias", None)
        if bias is not None:
            bias[keep_rows:] = bias[:mean_rows].mean()
    if model.config.get_text_config().tie_word_embeddings and output is not None:
        assert output.weight is model.get_input_embeddings().weight, "tied embeddings came untied"
    return new_rows
