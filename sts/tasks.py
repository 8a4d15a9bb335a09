"""Task formats: one chat-format sample per task, speech as runs of speech ids between markers.

    from sts.tasks import Example, TaskFormatter
    fmt = TaskFormatter(tokenizer, SpeechVocab.load(model_dir))
    sample = fmt.build(Example("s2st", "ja", "en", src_codes=ja_codes, tgt_codes=en_codes))
    sample["input_ids"], sample["labels"]      # [L] int64 each; labels -100 outside the loss
    prompt = fmt.prompt(Example("s2st", "ja", "en", src_codes=ja_codes))   # ends ready to generate
    out = fmt.parse(generated_ids, "s2st")    # out.codes: [T] int32, out.finished, out.stray_ids

Tasks (`src_lang` -> `tgt_lang`, both in `sts.LANGUAGES`):

    s2st  speech -> speech in the other language    asr   speech -> text, same language
    s2tt  speech -> text in the other language      tts   text -> speech, same language
    t2tt  text -> text in the other language

Every sample is the model's own chat template over [system, user, assistant]. A speech segment is
written into the message as `<|speech_start|><|speech_end|>`, the rendered text is tokenized, and
the code ids are spliced in between the two marker ids by arithmetic (`SpeechVocab.codes_to_ids`),
never by formatting `<|s_k|>` strings. The loss covers the assistant turn through its end-of-turn
token by default (`loss="assistant"`), or every token but the first (`loss="full"`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from sts import LANGUAGES
from sts.vocab import SpeechVocab

IGNORE_INDEX = -100
"""Label value that `torch.nn.functional.cross_entropy` skips."""

LANGUAGE_NAMES = {"ja": "Japanese", "en": "English"}


@dataclass(frozen=True)
class TaskSpec:
    """What a task reads and writes."""

    name: str
    input: Literal["speech", "text"]
    output: Literal["speech", "text"]
    translates: bool
    """True when the output is in the other language."""
    system_prompt: str
    """Filled with `{src}` and `{tgt}` language names."""


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("s2st", "speech", "speech", True, "Translate the {src} speech into {tgt} speech."),
        TaskSpec("s2tt", "speech", "text", True, "Translate the {src} speech into {tgt} text."),
        TaskSpec("t2tt", "text", "text", True, "Translate the {src} text into {tgt} text."),
        TaskSpec("asr", "speech", "text", False, "Transcribe the {src} speech."),
        TaskSpec("tts", "text", "speech", False, "Read the {src} text aloud."),
    )
}


def task_spec(task: str) -> TaskSpec:
    """The spec of a task by name, with an error that lists the known ones."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks are {sorted(TASKS)}")
    return TASKS[task]


@dataclass
class Example:
    """One task instance. Which fields are needed depends on the task (see `check`)."""

    task: str
    src_lang: str
    tgt_lang: str
    src_text: str | None = None
    tgt_text: str | None = None
    src_codes: np.ndarray | None = None
    """`[T_src]` int codec codes of the source speech."""
    tgt_codes: np.ndarray | None = None
    """`[T_tgt]` int codec codes of the target speech."""

    @property
    def spec(self) -> TaskSpec:
        return task_spec(self.task)

    def check(self, *, with_output: bool = True) -> None:
        """Raise ValueError when a field the task needs is missing or the languages do not fit."""
        spec = self.spec
        for lang in (self.src_lang, self.tgt_lang):
            if lang not in LANGUAGES:
                raise ValueError(f"{self.task}: unsupported language {lang!r}; supported: {LANGUAGES}")
        if spec.translates == (self.src_lang == self.tgt_lang):
            kind = "different" if spec.translates else "the same"
            raise ValueError(
                f"{self.task}: source and target language must be {kind} ({self.src_lang}->{self.tgt_lang})"
            )
        needed = [f"src_{'codes' if spec.input == 'speech' else 'text'}"]
        if with_output:
            needed.append(f"tgt_{'codes' if spec.output == 'speech' else 'text'}")
        for name in needed:
            value = getattr(self, name)
            if value is None or len(value) == 0:
                raise ValueError(f"{self.task}: {name} is missing or empty")

    def system_prompt(self) -> str:
        return self.spec.system_prompt.format(
            src=LANGUAGE_NAMES[self.src_lang], tgt=LANGUAGE_NAMES[self.tgt_lang]
        )


@dataclass
class ParsedOutput:
    """A generated assistant turn read back."""

    codes: np.ndarray | None
    """`[T]` int32 speech codes for speech-output tasks, else None."""
    text: str | None
    """Decoded text for text-output tasks, else None."""
    finished: bool
    """True when the output closed properly (speech end marker / end-of-turn token)."""
    stray_ids: int = 0
    """Ids of the wrong kind that were dropped (text ids in speech output, speech ids in text)."""


class TaskFormatter:
    """Builds training samples and prompts for a tokenizer extended by `sts-extend-tokenizer`."""

    def __init__(self, tokenizer, vocab: SpeechVocab):
        if tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat template")
        if tokenizer.convert_tokens_to_ids(vocab.speech_start_token) != vocab.speech_start_id:
            raise ValueError("tokenizer and sts_vocab.json disagree on the speech marker ids")
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.end_of_turn_id = tokenizer.eos_token_id
        self._placeholder = vocab.speech_start_token + vocab.speech_end_token
        self._special_ids = set(tokenizer.all_special_ids)

    def build(
        self, example: Example, *, loss: Literal["assistant", "full"] = "assistant"
    ) -> dict[str, np.ndarray]:
        """A training sample: `input_ids` and `labels`, `[L]` int64 each."""
        example.check()
        spec = example.spec
        messages = self._messages(example)
        output = example.tgt_codes if spec.output == "speech" else self._checked_text(example.tgt_text)
        messages.append({"role": "assistant", "content": self._content(output)})
        prompt_ids = self._render(messages[:2], add_generation_prompt=True)
        ids = self._render(messages, add_generation_prompt=False)
        if ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError(
                "the chat template does not render the prompt as a prefix of the full conversation"
            )
        source_speech = [example.src_codes] if spec.input == "speech" else []
        segments = source_speech + ([example.tgt_codes] if spec.output == "speech" else [])
        input_ids = self._splice(ids, segments)
        prompt_len = len(self._splice(prompt_ids, source_speech))

        labels = input_ids.copy()
        if loss == "assistant":
            labels[:prompt_len] = IGNORE_INDEX
            ends = np.flatnonzero(input_ids[prompt_len:] == self.end_of_turn_id)
            if len(ends):  # what the template writes after the end-of-turn token is not the answer
                labels[prompt_len + ends[0] + 1 :] = IGNORE_INDEX
        elif loss != "full":
            raise ValueError(f"loss must be 'assistant' or 'full', got {loss!r}")
        labels[0] = IGNORE_INDEX  # nothing predicts the first token
        return {"input_ids": input_ids, "labels": labels}

    def prompt(self, example: Example, *, prefill_speech_start: bool = True) -> np.ndarray:
        """Input ids `[L]` int64 that end where the assistant starts to answer.

        For a speech-output task the speech start marker is already written (`prefill_speech_start`),
        so the first generated id is a speech token.
        """
        example.check(with_output=False)
        ids = self._render(self._messages(example), add_generation_prompt=True)
        segments = [example.src_codes] if example.spec.input == "speech" else []
        ids = self._splice(ids, segments)
        if prefill_speech_start and example.spec.output == "speech":
            ids = np.append(ids, self.vocab.speech_start_id)
        return ids

    def parse(self, generated_ids, task: str) -> ParsedOutput:
        """Read a generated assistant turn (ids after the prompt) back into codes or text."""
        spec = task_spec(task)
        ids = np.asarray(generated_ids, dtype=np.int64).ravel()
        stops = {self.end_of_turn_id} | ({self.vocab.speech_end_id} if spec.output == "speech" else set())
        stop_at = next((i for i, t in enumerate(ids.tolist()) if t in stops), None)
        finished = stop_at is not None
        body = ids[:stop_at]
        if spec.output == "speech":
            if len(body) and body[0] == self.vocab.speech_start_id:
                body = body[1:]
            is_speech = self.vocab.is_speech_id(body)
            codes = self.vocab.ids_to_codes(body[is_speech])
            return ParsedOutput(codes=codes, text=None, finished=finished, stray_ids=int((~is_speech).sum()))
        is_text = body < self.vocab.text_vocab_size
        text = self.tokenizer.decode(body[is_text].tolist(), skip_special_tokens=True)
        return ParsedOutput(codes=None, text=text.strip(), finished=finished, stray_ids=int((~is_text).sum()))

    def _messages(self, example: Example) -> list[dict[str, str]]:
        source = example.src_codes if example.spec.input == "speech" else self._checked_text(example.src_text)
        return [
            {"role": "system", "content": example.system_prompt()},
            {"role": "user", "content": self._content(source)},
        ]

    def _content(self, value) -> str:
        return value if isinstance(value, str) else self._placeholder

    def _checked_text(self, text: str) -> str:
        """Text must not smuggle in special tokens (a transcript containing "<|im_end|>", say)."""
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if any(i in self._special_ids or i >= self.vocab.text_vocab_size for i in ids):
            raise ValueError(f"text contains special-token strings: {text[:80]!r}")
        return text

    def _render(self, messages, *, add_generation_prompt: bool) -> list[int]:
        rendered = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return self.tokenizer(rendered, add_special_tokens=False).input_ids

    def _splice(self, ids: list[int], segments: list[np.ndarray]) -> np.ndarray:
        """Insert each segment's speech ids between the next adjacent start/end marker pair."""
        ids = np.asarray(ids, dtype=np.int64)
        starts = np.flatnonzero(ids == self.vocab.speech_start_id)
        if len(starts) != len(segments) or (
            len(starts) and (ids[np.minimum(starts + 1, len(ids) - 1)] != self.vocab.speech_end_id).any()
        ):
            raise ValueError(f"expected {len(segments)} empty speech placeholder(s), found {len(starts)}")
        pieces, previous = [], 0
        for start, codes in zip(starts, segments, strict=True):
            pieces += [ids[previous : start + 1], self.vocab.codes_to_ids(np.asarray(codes))]
            previous = start + 1
        pieces.append(ids[previous:])
        return np.concatenate(pieces)
