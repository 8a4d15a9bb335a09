"""Task samples at speed: each chat layout rendered and tokenized once, per sample only ids spliced in.

    layout = compile_layout(tokenizer, vocab, full, prompt, ["src_text"], ["tgt_codes"])
    ids, prompt_len = fill_layout(layout, example, vocab, encode, check_text)   # [L] int64, int

`sts.tasks.TaskFormatter` uses this; rendering the chat template and tokenizing the result for every
sample (twice: the prompt and the whole conversation) is what made sample building slow. A layout --
one task, its two languages, with or without the answer -- is rendered once with marker strings in
place of the text fields and empty speech placeholders, tokenized, and kept as parts: constant id
runs, speech slots (the code ids go in by arithmetic, `SpeechVocab.codes_to_ids`) and text slots.

Text slots stay exact because a Hugging Face tokenizer cuts its input at added tokens (`<|im_start|>`,
`<|im_end|>`, the speech markers, ...) before it normalizes, pre-tokenizes or merges anything: the ids
between two added tokens depend only on the characters between them. So a text field is tokenized
inside its piece of the rendered string, from the added token before it through the added token after
it (`<|im_start|>user\\n{text}<|im_end|>`), and the ids between those two replace the template's. A
piece whose first or last id is not the expected added token (a tokenizer that cuts otherwise, an
added token that strips the whitespace beside it differently) raises `NotSpliceable` and the caller
renders that sample in full.

`compile_layout` returns None -- use full rendering for that layout -- unless the template writes the
text fields verbatim (the markers, which carry spaces, newlines, quotes and `<&>`, come out unchanged,
exactly once: no trimming, no escaping), every speech placeholder is an adjacent start/end marker
pair, and the rendered prompt is a token prefix of the rendered conversation. `TaskFormatter` also
compares the spliced sample with the fully rendered one on the first use of each layout and loss and
keeps full rendering for a layout where they differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sts.vocab import SpeechVocab

TEXT_MARKERS = {
    "src_text": " \n\"'<&\ue000sts-src-text\ue000&>'\"\n ",
    "tgt_text": " \n\"'<&\ue000sts-tgt-text\ue000&>'\"\n ",
    "answer_text": " \n\"'<&\ue000sts-answer-text\ue000&>'\"\n ",
}
"""What the template is rendered with in place of each text field (private-use characters keep them
unique; the whitespace, quotes and `<&>` show trimming or escaping, which would disqualify the layout)."""


class NotSpliceable(Exception):
    """This text cannot be spliced into its layout exactly; render the sample in full instead."""


@dataclass(frozen=True)
class SpeechSlot:
    """Where a speech segment's ids go (between an adjacent start/end marker pair)."""

    field: str
    """`"src_codes"` or `"tgt_codes"`: the `Example` field that holds the codes."""


@dataclass(frozen=True)
class TextSlot:
    """Where a text field's ids go, and the piece of rendered string to tokenize them in."""

    field: str
    """`"src_text"`, `"tgt_text"` or `"answer_text"` (the texts a chain format writes before its speech)."""
    head: str
    """Rendered characters from the start of the added token before the field up to the field."""
    tail: str
    """Rendered characters after the field through the end of the added token after it."""
    first_id: int | None
    """Id of the added token the piece starts with; None when the field starts the rendered string."""
    last_id: int | None
    """Id of the added token the piece ends with; None when the field ends the rendered string."""
    prompt_ids: tuple[int, ...] | None = None
    """When the prompt ends inside this piece (`<|im_start|>assistant\n` before the answer): the ids
    the prompt has there after `first_id`; the answer's piece must start with them."""


@dataclass(frozen=True)
class Layout:
    """A rendered, tokenized chat layout: parts to concatenate, the first `prompt_parts` of them the prompt."""

    parts: tuple[np.ndarray | SpeechSlot | TextSlot, ...]
    """Constant id runs (`[n]` int64) and slots, in order."""
    prompt_parts: int
    """How many leading parts make up the prompt (everything up to where the assistant answers); when
    part `prompt_parts` is a `TextSlot` with `prompt_ids`, the prompt ends inside it."""


def added_token_ids(tokenizer) -> set[int]:
    """Ids of every added token (special or not): the strings a tokenizer cuts its input at first."""
    return {int(i) for i in tokenizer.added_tokens_decoder}


def compile_layout(
    tokenizer,
    vocab: SpeechVocab,
    full: str,
    prompt: str,
    text_fields: Sequence[str],
    speech_fields: Sequence[str],
) -> Layout | None:
    """The layout of a rendered conversation, or None when it cannot be spliced exactly.

    Args:
        full: the rendered conversation with `TEXT_MARKERS` for the text fields and empty speech
            placeholders (`<|speech_start|><|speech_end|>`); for a prompt-only layout, the prompt.
        prompt: the rendered prompt (with generation prompt), a prefix of `full`.
        text_fields: the text fields rendered (`"src_text"`, `"tgt_text"`).
        speech_fields: the speech fields, in the order their placeholders appear.
    """
    if not full.startswith(prompt):
        return None
    markers = {field: TEXT_MARKERS[field] for field in text_fields}
    if any(full.count(marker) != 1 for marker in markers.values()):
        return None  # trimmed, escaped or repeated by the template
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False).input_ids)
    prompt_len = len(prompt_ids)
    added_ids = added_token_ids(tokenizer)
    added = [i for i, t in enumerate(ids.tolist()) if t in added_ids]

    cuts: list[tuple[int, int, SpeechSlot | TextSlot]] = []  # replace ids[begin:end] with the slot
    inner: TextSlot | None = None  # the slot whose piece holds the end of the prompt, if any
    for field, marker in markers.items():
        start = full.index(marker)
        stop = start + len(marker)
        if any(offsets[i][1] > start and offsets[i][0] < stop for i in added):
            return None
        before = [i for i in added if offsets[i][1] <= start]
        after = [i for i in added if offsets[i][0] >= stop]
        first, last = (before[-1] if before else -1), (after[0] if after else len(ids))
        head_from = offsets[first][0] if before else 0
        tail_to = offsets[last][1] if after else len(full)
        prompt_tail = None
        piece_from = offsets[first][1] if before else 0  # where the opening added token ends
        if piece_from < len(prompt) <= start:
            # The prompt stops inside this piece (`<|im_start|>assistant\n` + answer): its own ids
            # there are split off per sample (a text that merges with them cannot be spliced).
            if prompt_ids[: first + 1] != ids[: first + 1].tolist():
                return None
            prompt_tail = tuple(prompt_ids[first + 1 :])
        elif head_from < len(prompt) < tail_to and len(prompt) != piece_from:
            return None  # the prompt would end inside an added token or after the field
        slot = TextSlot(
            field,
            head=full[head_from:start],
            tail=full[stop:tail_to],
            first_id=int(ids[first]) if before else None,
            last_id=int(ids[last]) if after else None,
            prompt_ids=prompt_tail,
        )
        inner = slot if prompt_tail is not None else inner
        cuts.append((first + 1, last, slot))
    starts = np.flatnonzero(ids == vocab.speech_start_id)
    if len(starts) != len(speech_fields) or any(
        s + 1 >= len(ids) or ids[s + 1] != vocab.speech_end_id for s in starts
    ):
        return None
    cuts += [
        (int(s) + 1, int(s) + 1, SpeechSlot(field)) for s, field in zip(starts, speech_fields, strict=True)
    ]
    cuts.sort(key=lambda cut: (cut[0], cut[1]))

    parts: list[np.ndarray | SpeechSlot | TextSlot] = []
    prompt_parts: int | None = None
    at = 0

    def constant(begin: int, end: int) -> None:
        if end > begin:
            parts.append(ids[begin:end])

    for begin, end, slot in cuts:
        if begin < at:
            return None  # two slots between the same pair of added tokens
        if prompt_parts is None and inner is None and prompt_len <= begin:
            constant(at, prompt_len)
            prompt_parts = len(parts)
            constant(prompt_len, begin)
        elif prompt_parts is None and inner is None and prompt_len < end:
            return None  # the prompt would end inside a slot
        else:
            constant(at, begin)
        if slot is inner:
            prompt_parts = len(parts)
        parts.append(slot)
        at = end
    if inner is None and ids[:prompt_len].tolist() != prompt_ids:
        return None  # the prompt is not a token prefix of the conversation
    if prompt_parts is None:
        if prompt_len < at:
            return None
        constant(at, prompt_len)
        prompt_parts = len(parts)
        constant(prompt_len, len(ids))
    else:
        constant(at, len(ids))
    return Layout(tuple(parts), prompt_parts)


def fill_layout(
    layout: Layout,
    example,
    vocab: SpeechVocab,
    encode: Callable[[str], list[int]],
    check_text: Callable[[np.ndarray, str], None],
) -> tuple[np.ndarray, int]:
    """The ids of `example` in `layout` (`[L]` int64) and the prompt's length in them.

    `encode` tokenizes a string without adding special tokens; `check_text(ids, text)` raises when a
    text's ids hold special tokens. Raises `NotSpliceable` when a text's piece does not start and end
    with the expected added tokens, and `sts.vocab.VocabError` for a code outside the speech block.
    """
    pieces: list[np.ndarray] = []
    speech_spans: list[tuple[int, int]] = []  # where codes sit; the speech offset is added at the end
    length = prompt_len = 0
    for j, part in enumerate(layout.parts):
        if j == layout.prompt_parts:
            prompt_len = length
        if type(part) is np.ndarray:
            ids = part
        elif type(part) is SpeechSlot:
            ids = getattr(example, part.field)
            if not isinstance(ids, np.ndarray):
                ids = np.asarray(ids)
            if (
                len(ids) == 0
                or ids.dtype.kind not in "iu"
                or ids.min() < 0
                or ids.max() >= vocab.num_speech_tokens
            ):
                vocab.codes_to_ids(ids)  # raises VocabError naming the first bad code
            speech_spans.append((length, length + len(ids)))
        else:
            text = getattr(example, part.field)
            piece = encode(part.head + text + part.tail)
            lo = int(part.first_id is not None)
            hi = len(piece) - int(part.last_id is not None)
            if (
                hi < lo
                or (part.first_id is not None and piece[0] != part.first_id)
                or (part.last_id is not None and piece[-1] != part.last_id)
            ):
                raise NotSpliceable(part.field)
            ids = np.asarray(piece[lo:hi], dtype=np.int64)
            check_text(ids, text)
            if part.prompt_ids is not None:  # the prompt ends inside this piece
                if ids[: len(part.prompt_ids)].tolist() != list(part.prompt_ids):
                    raise NotSpliceable(part.field)
                prompt_len = length + len(part.prompt_ids)
        pieces.append(ids)
        length += len(ids)
    if layout.prompt_parts == len(layout.parts):
        prompt_len = length
    out = np.concatenate(pieces, dtype=np.int64)
    for begin, end in speech_spans:
        out[begin:end] += vocab.speech_token_offset
    return out, prompt_len
