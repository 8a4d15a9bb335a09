"""The vocabulary contract: where the speech tokens sit in the LM's vocabulary.

One contiguous block of `num_speech_tokens` ids starts at `speech_token_offset`; code `k` is id
`speech_token_offset + k`, by arithmetic, never by formatting `<|s_k|>` and re-tokenizing. Two marker
tokens open and close every speech segment. `sts-extend-tokenizer` writes the contract as
`sts_vocab.json` beside the weights and every later stage reads it from there:

    from sts.vocab import SpeechVocab
    vocab = SpeechVocab.load("runs/lfm2-speech")        # reads runs/lfm2-speech/sts_vocab.json
    ids = vocab.codes_to_ids(codes)                      # codes: [T] int -> ids: [T] int64
    assert (vocab.ids_to_codes(ids) == codes).all()

Id layout after extension (`text_vocab_size` = `len(tokenizer)` before it):

    [0, text_vocab_size)                          the base model's tokens, untouched
    speech_start_id, speech_end_id                the markers, right after them
    [speech_token_offset, +num_speech_tokens)     <|s_0|> ... <|s_{n-1}|>
    [.., vocab_size)                              padding rows (vocab_size is a multiple of 128)

A model that already speaks the codec (Llasa's layout, `sts.llasa_layout`) is adopted as it is: there
`text_vocab_size` is the id of its first marker (128,256 for Llasa), the markers are
`<|SPEECH_GENERATION_START|>`/`<|SPEECH_GENERATION_END|>` among its 8, and `vocab_size` is its own
row count (Llasa's training script resizes to `len(tokenizer)` = 128,256 + 8 + 65,536, unpadded). The contract only requires the block and both markers
to lie in `[text_vocab_size, vocab_size)`, the markers outside the block; other ids there are fine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TypeVar

import numpy as np

from sts.errors import CorruptFileError, InputError
from sts.io import read_json, write_text_atomic
from sts.paths import record_path, resolve_recorded, same_location

VOCAB_FILE = "sts_vocab.json"
SPEECH_TOKEN_FORMAT = "<|s_{}|>"
SPEECH_START_TOKEN = "<|speech_start|>"
SPEECH_END_TOKEN = "<|speech_end|>"
PATH_FIELDS = ("codec", "base_model")
"""Fields that may name a local path: saved relative to the file, loaded absolute (`sts.paths`)."""

Ids = TypeVar("Ids")  # np.ndarray or torch.Tensor: functions return the type they were given


class VocabError(InputError, ValueError):
    """A missing or inconsistent `sts_vocab.json`, or ids/codes outside their range."""


class CodecMismatchError(VocabError):
    """Codes made by one codec meeting a vocabulary made for another (name, frame rate or codebook)."""


@dataclass(frozen=True)
class SpeechVocab:
    """Where the speech tokens live; saved as `sts_vocab.json`."""

    speech_token_offset: int
    """Id of `<|s_0|>`; code k is id `speech_token_offset + k`."""
    num_speech_tokens: int
    """Size of the speech block: the codec's codebook size (65,536 for XCodec2)."""
    speech_start_id: int
    """Id of the marker that opens a speech segment."""
    speech_end_id: int
    """Id of the marker that closes a speech segment (and ends a speech-output generation)."""
    text_vocab_size: int
    """Ids below it are the base model's own text tokens: `len(tokenizer)` of the base when extended,
    the id of the first marker when adopted (Llasa)."""
    vocab_size: int
    """Embedding rows: after extension a multiple of `pad_to_multiple_of`; when adopted, the base's own."""
    codec: str = "HKUSTAudio/xcodec2-hf"
    """The codec whose codes the block holds (Hugging Face id or path). A local path is saved relative to
    the file's folder (or absolute) and loaded back absolute (`sts.paths`), so it resolves from anywhere."""
    frame_rate: float = 50.0
    """Codes per second of audio."""
    base_model: str = ""
    """The model that was extended or adopted (a local path is saved and loaded as `codec` is)."""
    speech_token_format: str = SPEECH_TOKEN_FORMAT
    """String form of speech token k, for humans and for tokenizers; never used to map codes."""
    speech_start_token: str = SPEECH_START_TOKEN
    """String of `speech_start_id` (`<|SPEECH_GENERATION_START|>` in an adopted Llasa)."""
    speech_end_token: str = SPEECH_END_TOKEN
    """String of `speech_end_id` (`<|SPEECH_GENERATION_END|>` in an adopted Llasa)."""
    format_version: int = 1
    """Bumped when the layout changes; `load` refuses versions it does not know."""

    def __post_init__(self) -> None:
        stop = self.speech_token_offset + self.num_speech_tokens
        if self.num_speech_tokens <= 0:
            raise VocabError(f"num_speech_tokens must be positive, got {self.num_speech_tokens}")
        if self.speech_token_offset < self.text_vocab_size or stop > self.vocab_size:
            raise VocabError(
                f"speech block [{self.speech_token_offset}, {stop}) must lie in "
                f"[text_vocab_size={self.text_vocab_size}, vocab_size={self.vocab_size})"
            )
        for name in ("speech_start_id", "speech_end_id"):
            marker = getattr(self, name)
            if not self.text_vocab_size <= marker < self.vocab_size or self.is_speech_id(marker):
                raise VocabError(f"{name}={marker} must be a new id outside the speech block")

    @property
    def speech_token_stop(self) -> int:
        """One past the last speech id."""
        return self.speech_token_offset + self.num_speech_tokens

    def is_speech_id(self, ids: Ids) -> Ids:
        """Elementwise: is this id a speech token? Works on ints, numpy arrays and torch tensors."""
        return (ids >= self.speech_token_offset) & (ids < self.speech_token_stop)

    def codes_to_ids(self, codes: Ids) -> Ids:
        """Codes `[...]` in `[0, num_speech_tokens)` -> token ids `[...]` (int64)."""
        _check_range(codes, 0, self.num_speech_tokens, "speech code")
        return _as_int64(codes) + self.speech_token_offset

    def ids_to_codes(self, ids: Ids) -> Ids:
        """Speech token ids `[...]` -> codes `[...]` (int32); any non-speech id is an error."""
        _check_range(ids, self.speech_token_offset, self.speech_token_stop, "speech token id")
        codes = ids - self.speech_token_offset
        return codes.to(dtype=_torch().int32) if _is_tensor(codes) else np.asarray(codes, dtype=np.int32)

    def codec_differences(
        self, codec: str | None, frame_rate: float | None, codebook_size: int | None
    ) -> list[str]:
        """The codec contract fields where a codec (as a corpus card records it, or as loaded) differs
        from this vocabulary: any of "codebook_size" (vs `num_speech_tokens`), "frame_rate", "codec"
        (the name: a local path counts as the same however it is spelled, `sts.paths.same_location`;
        pass a recorded one resolved, `sts.paths.resolve_recorded`). A None value is not compared."""
        differences = []
        if codebook_size is not None and int(codebook_size) != self.num_speech_tokens:
            differences.append("codebook_size")
        if frame_rate is not None and abs(float(frame_rate) - self.frame_rate) > 1e-6:
            differences.append("frame_rate")
        if codec is not None and not same_location(codec, self.codec):
            differences.append("codec")
        return differences

    def speech_token(self, code: int) -> str:
        """The token string of code `code`, e.g. `<|s_42|>`."""
        return self.speech_token_format.format(code)

    def save(self, model_dir: str | Path) -> Path:
        """Write `model_dir/sts_vocab.json` atomically; returns its path. Local `codec` and `base_model`
        paths are recorded relative to `model_dir` (`sts.paths.record_path`)."""

        data = asdict(self)
        for name in PATH_FIELDS:
            data[name] = record_path(data[name], model_dir) if data[name] else data[name]
        return write_text_atomic(Path(model_dir) / VOCAB_FILE, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: str | Path) -> SpeechVocab:
        """Read `model_dir/sts_vocab.json` (or that file itself) and check it."""
        path = Path(model_dir)
        if path.is_dir():
            path = path / VOCAB_FILE
        if not path.is_file():
            raise VocabError(
                f"{path}: no such file; extend the model first with `sts-extend-tokenizer BASE {path.parent}`"
            )

        try:
            data = read_json(path, what="the vocabulary contract")
        except CorruptFileError as err:
            raise VocabError(str(err)) from err
        except OSError as err:
            raise VocabError(f"{path}: cannot read the vocabulary contract ({err.strerror or err})") from err
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or data.get("format_version", 1) != 1 or not known >= set(data):
            raise VocabError(f"{path}: not a version-1 sts vocabulary (unknown keys or version)")
        ints = [f.name for f in fields(cls) if f.type == "int" and f.name in data]
        wrong = [n for n in ints if type(data[n]) is not int]
        if wrong:
            raise VocabError(f"{path}: {wrong[0]} must be an integer, got {data[wrong[0]]!r}")
        for (
            name
        ) in PATH_FIELDS:  # paths recorded relative to the file (or, in older files, to where it was made)
            if isinstance(data.get(name), str) and data[name]:
                data[name] = resolve_recorded(data[name], path.parent)
        try:
            vocab = cls(**data)
        except TypeError as err:
            raise VocabError(f"{path}: {err}") from err
        except VocabError as err:
            raise VocabError(f"{path}: {err}") from err
        object.__setattr__(vocab, "_file", path)  # not a field: named in the errors of check_tokenizer
        return vocab

    def check_tokenizer(
        self,
        tokenizer,
        model_config=None,
        *,
        vocab_file: str | Path | None = None,
        layout_markers: Sequence[str] = (),
    ) -> None:
        """Check the whole contract against the tokenizer (and the model's config, when given).

        Each of: `speech_start_token` / `speech_end_token` map to `speech_start_id` / `speech_end_id`;
        `<|s_0|>` and `<|s_{n-1}|>` map to `speech_token_offset` and `offset + n - 1` and `<|s_n|>` is
        not a token (so code k is `<|s_k|>` for every k, the block being contiguous as
        `sts-extend-tokenizer` and `sts.llasa_layout` verify when they write it); `text_vocab_size` is where
        the base's tokens end: `len(tokenizer)` before extension (the start marker's id, with
        `len(tokenizer) == speech_token_stop`) or, in an adopted model, the first of its
        `layout_markers` (Llasa's 8, `sts.llasa_layout.MARKERS`: `sts.model_files.load_speech_contract`
        passes them); and `model_config.vocab_size` (the embedding rows) is at least `vocab_size`.
        Reads ids of a handful of tokens only, no model weights.

        Raises `VocabError` naming `vocab_file` (default: the file `load` read) and the first
        mismatch, e.g. a speech offset that is one off, which would otherwise turn code k into
        `<|s_{k+1}|>` everywhere without any other error.
        """
        source = vocab_file or getattr(self, "_file", VOCAB_FILE)
        n = self.num_speech_tokens

        def token_id(token: str) -> int | None:
            ids = tokenizer.convert_tokens_to_ids([token])
            unk = getattr(tokenizer, "unk_token_id", None)
            found = ids[0] if ids else None
            return (
                None
                if found is None or (found == unk and tokenizer.convert_ids_to_tokens(found) != token)
                else found
            )

        expected = {
            self.speech_start_token: (self.speech_start_id, "speech_start_id"),
            self.speech_end_token: (self.speech_end_id, "speech_end_id"),
            self.speech_token(0): (self.speech_token_offset, "speech_token_offset"),
            self.speech_token(n - 1): (self.speech_token_offset + n - 1, f"speech_token_offset + {n - 1}"),
        }
        for token, (want, field_name) in expected.items():
            got = token_id(token)
            if got != want:
                where = "is not in the tokenizer" if got is None else f"is id {got} in the tokenizer"
                raise VocabError(
                    f"{source}: {token} {where}, but {field_name} = {want}; this sts_vocab.json does not "
                    "belong to the tokenizer beside it"
                )
        if token_id(self.speech_token(n)) is not None:
            raise VocabError(
                f"{source}: the tokenizer has {self.speech_token(n)}, beyond num_speech_tokens = {n}"
            )
        if len(tokenizer) < self.speech_token_stop:
            raise VocabError(
                f"{source}: the tokenizer has {len(tokenizer)} tokens, fewer than the speech block's end "
                f"({self.speech_token_stop})"
            )
        if self.speech_start_token == SPEECH_START_TOKEN:  # extended here: markers, then the block, last
            if len(tokenizer) != self.speech_token_stop:
                raise VocabError(
                    f"{source}: the tokenizer has {len(tokenizer)} tokens, but an extended model's tokens end "
                    f"with its speech block at id {self.speech_token_stop - 1}"
                )
            base_end, where = (
                min(self.speech_start_id, self.speech_end_id, self.speech_token_offset),
                "marker",
            )
        else:  # adopted (Llasa): its first marker
            found = [i for i in map(token_id, layout_markers) if i is not None]
            base_end, where = (min(found), "layout marker") if layout_markers else (None, "")
            if len(found) != len(layout_markers):
                missing = [m for m in layout_markers if token_id(m) is None]
                raise VocabError(f"{source}: the tokenizer lacks the layout's marker(s) {missing}")
        if base_end is not None and base_end != self.text_vocab_size:
            raise VocabError(
                f"{source}: text_vocab_size = {self.text_vocab_size}, but the tokenizer's own text tokens end "
                f"at id {base_end} (its first {where})"
            )
        rows = getattr(model_config, "vocab_size", None) if model_config is not None else None
        if rows is None and model_config is not None and hasattr(model_config, "get_text_config"):
            rows = getattr(model_config.get_text_config(), "vocab_size", None)
        if rows is not None and rows < self.vocab_size:
            raise VocabError(
                f"{source}: vocab_size = {self.vocab_size}, but the model's config.json has only {rows} "
                "embedding rows (vocab_size)"
            )


def round_up(n: int, multiple: int) -> int:
    """Smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


def _torch():
    import torch

    return torch


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch")


def _as_int64(x):
    if _is_tensor(x):
        return x.to(dtype=_torch().int64)
    return np.asarray(x, dtype=np.int64)


def _check_range(values, low: int, high: int, what: str) -> None:
    """Raise VocabError naming the first value outside `[low, high)` and how many there are."""
    if _is_tensor(values):
        if values.is_floating_point():
            raise VocabError(f"{what}s must be integers, got {values.dtype}")
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        raise VocabError(f"{what}s must be integers, got {values.dtype}")
    bad = (values < low) | (values >= high)
    if bad.any():
        first = np.flatnonzero(bad.ravel())[0]
        raise VocabError(
            f"{int(bad.sum())} {what}(s) outside [{low}, {high}); first at flat index {first}: "
            f"{int(values.ravel()[first])}"
        )
