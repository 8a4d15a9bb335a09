"""Adopt the speech block a model already has (Llasa's layout) instead of adding a second one.

    sts-extend-tokenizer HKUSTAudio/Llasa-1B -o runs/llasa-1b-adopted               # --mode auto finds it
    sts-extend-tokenizer NandemoGHS/Anime-Llasa-3B -o runs/anime-llasa-3b-adopted --mode adopt

Why: Llasa-1B/3B (and the Japanese Anime-Llasa-3B) hold the same 65,536 XCodec2 tokens as our
vocabulary and were trained on ~250k h of text -> speech, so they start CPT/SFT already speaking,
where an extended text LM starts from mean-initialised speech rows. Adoption writes `sts_vocab.json`
for the existing block (`sts.llasa_layout` finds and verifies it) and saves the weights and tokenizer
unchanged; only an embedding matrix with fewer rows than the vocabulary needs is grown (new rows at
the mean, padded to `pad_to_multiple_of`). CPT, SFT, `sts-infer` and `sts-eval` then run unchanged.

Speech segments, input and output alike, are written between `<|SPEECH_GENERATION_START|>` and
`<|SPEECH_GENERATION_END|>`: the only marker pair Llasa was trained on around speech (its
`..._UNDERSTANDING_...` speech pair never occurs in its training data, so those embeddings are
untrained), and the end marker is what the model already emits to stop. Whether a segment is input
or output is said by the chat turn it sits in, as for every sts model.
"""

from __future__ import annotations

from sts.llasa_layout import SPEECH_END, SPEECH_START, LlasaLayout
from sts.vocab import SpeechVocab, VocabError, round_up
from tokenizer_ext.embeddings import grow_embeddings


def adopt_speech_block(
    model,
    tokenizer,
    layout: LlasaLayout,
    *,
    base_model: str,
    codec: str,
    frame_rate: float,
    pad_to_multiple_of: int = 128,
) -> SpeechVocab:
    """The vocabulary contract of `layout`; grows `model`'s embeddings in place only if they are too small.

    `vocab_size` is the number of embedding rows: unchanged, or grown to hold every token id and
    padded to `pad_to_multiple_of`. `base_model`, `codec` and `frame_rate` are recorded. Raises
    `VocabError` when the input and output matrices disagree in size.
    """
    rows = model.get_input_embeddings().weight.shape[0]
    output = model.get_output_embeddings()
    if output is not None and output.weight.shape[0] != rows:
        raise VocabError(
            f"{base_model}: {rows} input embedding rows but {output.weight.shape[0]} output rows"
        )
    needed = max(layout.speech_token_offset + layout.num_speech_tokens, len(tokenizer))
    if rows < needed:
        rows = grow_embeddings(model, round_up(needed, pad_to_multiple_of), keep_rows=rows, mean_rows=rows)
    return SpeechVocab(
        speech_token_offset=layout.speech_token_offset,
        num_speech_tokens=layout.num_speech_tokens,
        speech_start_id=layout.speech_start_id,
        speech_end_id=layout.speech_end_id,
        text_vocab_size=layout.text_vocab_size,
        vocab_size=rows,
        codec=codec,
        frame_rate=frame_rate,
        base_model=base_model,
        speech_start_token=SPEECH_START,
        speech_end_token=SPEECH_END,
    )
