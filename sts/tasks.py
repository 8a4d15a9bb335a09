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

s2st has three formats (`TaskFormatter(..., s2st_format=...)`, recorded beside a checkpoint in
`sts_tasks.json`), the assistant turn being:

    direct             <|speech_start|> target codes <|speech_end|>
    text-first         {source transcript}\n{translation}\n<|speech_start|> target codes <|speech_end|>
    translation-first  {translation}\n<|speech_start|> target codes <|speech_end|>

text-first is chain-of-modality decoding (listen, transcribe, translate, speak: SpeechGPT, UniSS;
Moshi/Hibiki's inner monologue); translation-first is the two-pass text-then-units order of UnitY
(SeamlessM4T), which reports +2.5-4.2 ASR-BLEU over single-pass speech-to-unit. A chain format's
texts are single lines (newlines inside them become spaces), so `parse` splits them at newlines.

Each layout (task, languages, format, with or without the answer) is rendered and tokenized once; a sample
only splices its code ids and its texts' ids into it (`sts.task_templates`), the same ids as full
rendering (checked on each layout's first use): ~0.4 ms -> ~25 us per s2st sample on one CPU core
(`benchmarks/data_path.py`, results in `benchmarks/RESULTS.md`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Literal, get_args

import numpy as np

from sts import LANGUAGES
from sts.io import write_json_atomic
from sts.task_templates import TEXT_MARKERS, Layout, NotSpliceable, compile_layout, fill_layout
from sts.vocab import SpeechVocab

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Label value that `torch.nn.functional.cross_entropy` skips."""

TaskName = Literal["s2st", "s2tt", "t2tt", "asr", "tts"]
"""The task names, for type hints and config fields; `TASKS` has one spec per name, in this order."""
TASK_NAMES: tuple[TaskName, ...] = get_args(TaskName)

LANGUAGE_NAMES = {"ja": "Japanese", "en": "English"}

S2STFormat = Literal["direct", "text-first", "translation-first"]
"""What the assistant writes before the target speech in s2st (see the module docstring)."""
S2ST_FORMATS: tuple[S2STFormat, ...] = get_args(S2STFormat)
CHAT_DATE = "26 Jul 2024"
"""The date Llama-3.x chat templates are rendered with (they write today's date otherwise)."""
TASKS_FILE = "sts_tasks.json"
"""Beside a checkpoint: the task formats it was trained with (`save_task_formats`)."""


@dataclass(frozen=True)
class TaskSpec:
    """What a task reads and writes."""

    name: TaskName
    input: Literal["speech", "text"]
    output: Literal["speech", "text"]
    translates: bool
    """True when the output is in the other language."""
    system_prompt: str
    """Filled with `{src}` and `{tgt}` language names."""


TASKS: dict[TaskName, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("s2st", "speech", "speech", True, "Translate the {src} speech into {tgt} speech."),
        TaskSpec("s2tt", "speech", "text", True, "Translate the {src} speech into {tgt} text."),
        TaskSpec("t2tt", "text", "text", True, "Translate the {src} text into {tgt} text."),
        TaskSpec("asr", "speech", "text", False, "Transcribe the {src} speech."),
        TaskSpec("tts", "text", "speech", False, "Read the {src} text aloud."),
    )
}


class MissingFieldError(ValueError):
    """An example lacks a field its task reads or writes (no codes or no text on one side)."""


class SpecialTokenTextError(ValueError):
    """A text field holds a special-token string (a transcript containing "<|im_end|>", say)."""


class PromptPrefixError(ValueError):
    """The rendered prompt is not a token prefix of the rendered conversation: the answer's first
    characters merge with the prompt's last tokens (an answer text starting with blank lines, say)."""


def task_spec(task: str) -> TaskSpec:
    """The spec of a task by name, with an error that lists the known ones."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks are {sorted(TASKS)}")
    return TASKS[task]


@dataclass
class Example:
    """One task instance. Which fields are needed depends on the task (see `check`)."""

    task: TaskName
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
                raise MissingFieldError(f"{self.task}: {name} is missing or empty")

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
    transcript: str | None = None
    """s2st text-first: the source transcript the model wrote before the speech."""
    translation: str | None = None
    """s2st text-first / translation-first: the translation the model wrote before the speech."""


def save_task_formats(model_dir: str | Path, s2st_format: S2STFormat) -> Path:
    """Write `model_dir/sts_tasks.json` (the formats a checkpoint was trained with); returns its path."""

    if s2st_format not in S2ST_FORMATS:
        raise ValueError(f"s2st format must be one of {S2ST_FORMATS}, got {s2st_format!r}")
    return write_json_atomic(Path(model_dir) / TASKS_FILE, {"format_version": 1, "s2st": s2st_format})


def load_task_formats(model_dir: str | Path) -> dict[str, str]:
    """The formats recorded beside a checkpoint; {"s2st": "direct"} when it has no `sts_tasks.json`."""
    path = Path(model_dir) / TASKS_FILE
    if not path.is_file():
        return {"s2st": "direct"}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the task formats ({err})") from err
    if not isinstance(data, dict) or data.get("s2st", "direct") not in S2ST_FORMATS:
        raise ValueError(f"{path}: 's2st' must be one of {S2ST_FORMATS}, got {data!r}")
    return {"s2st": data.get("s2st", "direct")}


def single_line(text: str) -> str:
    """`text` with every run of whitespace that holds a newline turned into one space, stripped."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


class TaskFormatter:
    """Builds training samples and prompts for a tokenizer extended by `sts-extend-tokenizer`.

    `cache_templates=True` (the default) renders each chat layout once and splices every sample's
    ids into it (`sts.task_templates`), checked against full rendering on each layout's first use;
    False renders and tokenizes every sample in full (the reference, ~10x slower).
    """

    def __init__(
        self,
        tokenizer,
        vocab: SpeechVocab,
        *,
        s2st_format: S2STFormat = "direct",
        cache_templates: bool = True,
    ):
        if s2st_format not in S2ST_FORMATS:
            raise ValueError(f"s2st_format must be one of {S2ST_FORMATS}, got {s2st_format!r}")
        if tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat template")
        vocab.check_tokenizer(
            tokenizer
        )  # markers and the speech block where sts_vocab.json says (VocabError)
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.end_of_turn_id = tokenizer.eos_token_id
        self.cache_templates = cache_templates
        self.s2st_format = s2st_format
        self._placeholder = vocab.speech_start_token + vocab.speech_end_token
        # all_special_ids misses "extra" specials such as Llama-3's <|start_header_id|> and reserved
        # tokens: read the added tokens marked special as well.
        # (ids at or above text_vocab_size, the speech block and markers, are refused on their own.)
        self._special_ids = {
            i
            for i in set(tokenizer.all_special_ids)
            | {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
            if i < vocab.text_vocab_size
        }
        self._special_array = np.array(sorted(self._special_ids), dtype=np.int64)
        self._layouts: dict[tuple, Layout | None] = {}
        self._agrees: dict[tuple, bool] = {}
        """(layout key, loss) -> whether the spliced sample equalled the rendered one on first use."""
        self.rendered_in_full = 0
        """Samples and prompts built by full rendering although `cache_templates` is on."""

    def build(
        self, example: Example, *, loss: Literal["assistant", "full"] = "assistant"
    ) -> dict[str, np.ndarray]:
        """A training sample: `input_ids` and `labels`, `[L]` int64 each.

        Raises `MissingFieldError` (a field the task needs is empty), `SpecialTokenTextError`,
        `PromptPrefixError`, `sts.vocab.VocabError` (a code outside the speech block) or ValueError
        (languages, loss).
        """
        example.check()
        if loss not in ("assistant", "full"):
            raise ValueError(f"loss must be 'assistant' or 'full', got {loss!r}")
        fast = self._spliced(example, with_output=True, loss=loss)
        if fast is not None:
            return fast
        self.rendered_in_full += self.cache_templates
        return self._build_rendered(example, loss)

    def prompt(self, example: Example, *, prefill_speech_start: bool = True) -> np.ndarray:
        """Input ids `[L]` int64 that end where the assistant starts to answer.

        For a speech-output task the speech start marker is already written (`prefill_speech_start`),
        so the first generated id is a speech token; not for s2st in a chain format, whose answer
        starts with its texts.
        """
        example.check(with_output=False)
        ids = self._spliced(example, with_output=False, loss=None)
        if ids is None:
            self.rendered_in_full += self.cache_templates
            ids = self._prompt_rendered(example)
        if prefill_speech_start and example.spec.output == "speech" and not self.chain(example.task):
            ids = np.append(ids, self.vocab.speech_start_id)
        return ids

    def chain(self, task: str) -> bool:
        """Whether `task`'s answer writes text before its speech (s2st text-first / translation-first)."""
        return task == "s2st" and self.s2st_format != "direct"

    def answer_text(self, example: Example) -> str:
        """The text a chain format writes before the target speech, newline-terminated lines."""
        lines = [example.tgt_text]
        if self.s2st_format == "text-first":
            lines.insert(0, example.src_text)
        for line in lines:
            if not line or not line.strip():
                raise MissingFieldError(f"{example.task} {self.s2st_format}: a text of the chain is empty")
        return "".join(single_line(line) + "\n" for line in lines)

    def _spliced(self, example: Example, *, with_output: bool, loss: str | None):
        """The sample (or prompt ids) through the cached layout; None where full rendering must be used."""
        if not self.cache_templates:
            return None
        chain = with_output and self.chain(example.task)
        key = (example.task, example.src_lang, example.tgt_lang, with_output, chain)
        if key not in self._layouts:
            self._layouts[key] = self._compile(example, with_output)
        layout = self._layouts[key]
        if layout is None or self._agrees.get((key, loss)) is False:
            return None
        fields = SimpleNamespace(**vars(example), answer_text=self.answer_text(example)) if chain else example
        try:
            ids, prompt_len = fill_layout(layout, fields, self.vocab, self._encode, self._check_text_ids)
        except NotSpliceable:
            return None
        result = self._labelled(ids, prompt_len, loss) if with_output else ids
        if (key, loss) not in self._agrees:  # first use: the rendered sample must be the same
            rendered = self._build_rendered(example, loss) if with_output else self._prompt_rendered(example)
            if with_output:
                same = all(np.array_equal(result[k], rendered[k]) for k in ("input_ids", "labels"))
            else:
                same = np.array_equal(result, rendered)
            self._agrees[(key, loss)] = same
            if not same:
                log.warning("%s: spliced ids differ from the rendered chat template; rendering in full", key)
                self.rendered_in_full += 1
                return rendered
        return result

    def _compile(self, example: Example, with_output: bool) -> Layout | None:
        spec = example.spec
        text_fields, speech_fields = [], []
        messages = [{"role": "system", "content": example.system_prompt()}]
        turns = [("user", "src", spec.input)] + ([("assistant", "tgt", spec.output)] if with_output else [])
        for role, side, kind in turns:
            if role == "assistant" and self.chain(example.task):
                text_fields.append("answer_text")
                speech_fields.append("tgt_codes")
                messages.append({"role": role, "content": TEXT_MARKERS["answer_text"] + self._placeholder})
            elif kind == "text":
                text_fields.append(f"{side}_text")
                messages.append({"role": role, "content": TEXT_MARKERS[f"{side}_text"]})
            else:
                speech_fields.append(f"{side}_codes")
                messages.append({"role": role, "content": self._placeholder})
        prompt = self._render_text(messages[:2], add_generation_prompt=True)
        full = self._render_text(messages, add_generation_prompt=False) if with_output else prompt
        return compile_layout(self.tokenizer, self.vocab, full, prompt, text_fields, speech_fields)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _check_text_ids(self, ids: np.ndarray, text: str) -> None:
        if len(ids) and (ids.max() >= self.vocab.text_vocab_size or np.isin(ids, self._special_array).any()):
            raise SpecialTokenTextError(f"text contains special-token strings: {text[:80]!r}")

    def _labelled(self, input_ids: np.ndarray, prompt_len: int, loss: str) -> dict[str, np.ndarray]:
        labels = input_ids.copy()
        if loss == "assistant":
            labels[:prompt_len] = IGNORE_INDEX
            ends = np.flatnonzero(input_ids[prompt_len:] == self.end_of_turn_id)
            if len(ends):  # what the template writes after the end-of-turn token is not the answer
                labels[prompt_len + ends[0] + 1 :] = IGNORE_INDEX
        labels[0] = IGNORE_INDEX  # nothing predicts the first token
        return {"input_ids": input_ids, "labels": labels}

    def _build_rendered(self, example: Example, loss: str) -> dict[str, np.ndarray]:
        """The sample by rendering the template and tokenizing the result (the reference path)."""
        spec = example.spec
        messages = self._messages(example)
        output = example.tgt_codes if spec.output == "speech" else self._checked_text(example.tgt_text)
        answer = self._content(output)
        if self.chain(example.task):
            answer = self._checked_text(self.answer_text(example)) + answer
        messages.append({"role": "assistant", "content": answer})
        prompt_ids = self._render(messages[:2], add_generation_prompt=True)
        ids = self._render(messages, add_generation_prompt=False)
        if ids[: len(prompt_ids)] != prompt_ids:
            raise PromptPrefixError(
                f"{example.task}: the prompt does not tokenize as a prefix of the conversation "
                f"(answer starts {str(example.tgt_text)[:20]!r})"
            )
        source_speech = [example.src_codes] if spec.input == "speech" else []
        segments = source_speech + ([example.tgt_codes] if spec.output == "speech" else [])
        input_ids = self._splice(ids, segments)
        prompt_len = len(self._splice(prompt_ids, source_speech))
        return self._labelled(input_ids, prompt_len, loss)

    def _prompt_rendered(self, example: Example) -> np.ndarray:
        ids = self._render(self._messages(example), add_generation_prompt=True)
        segments = [example.src_codes] if example.spec.input == "speech" else []
        return self._splice(ids, segments)

    def parse(self, generated_ids, task: str) -> ParsedOutput:
        """Read a generated assistant turn (ids after the prompt) back into codes or text."""
        spec = task_spec(task)
        ids = np.asarray(generated_ids, dtype=np.int64).ravel()
        stops = {self.end_of_turn_id} | ({self.vocab.speech_end_id} if spec.output == "speech" else set())
        stop_at = next((i for i, t in enumerate(ids.tolist()) if t in stops), None)
        finished = stop_at is not None
        body = ids[:stop_at]
        if spec.output == "speech":
            texts: dict[str, str | None] = {}
            if self.chain(task):
                starts = np.flatnonzero(body == self.vocab.speech_start_id)
                text_ids = body[: starts[0]] if len(starts) else body
                body = body[starts[0] :] if len(starts) else body[:0]
                finished &= len(starts) > 0
                is_text = text_ids < self.vocab.text_vocab_size
                stray = int((~is_text).sum())
                lines = self.tokenizer.decode(text_ids[is_text].tolist(), skip_special_tokens=True)
                lines = [line.strip() for line in lines.split("\n")]
                if self.s2st_format == "text-first":
                    texts = {"transcript": lines[0], "translation": lines[1] if len(lines) > 1 else None}
                else:
                    texts = {"translation": lines[0]}
            else:
                stray = 0
            if len(body) and body[0] == self.vocab.speech_start_id:
                body = body[1:]
            is_speech = self.vocab.is_speech_id(body)
            codes = self.vocab.ids_to_codes(body[is_speech])
            return ParsedOutput(
                codes=codes, text=None, finished=finished, stray_ids=stray + int((~is_speech).sum()), **texts
            )
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
            raise SpecialTokenTextError(f"text contains special-token strings: {text[:80]!r}")
        return text

    def _render_text(self, messages, *, add_generation_prompt: bool) -> str:
        # Llama-3.x templates (Llasa) write today's date into every system header unless given one:
        # a fixed date keeps training samples and inference prompts identical across days. Other
        # templates ignore the extra variable.
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, date_string=CHAT_DATE
        )

    def _render(self, messages, *, add_generation_prompt: bool) -> list[int]:
        rendered = self._render_text(messages, add_generation_prompt=add_generation_prompt)
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
