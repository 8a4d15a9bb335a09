"""Model folders checked where a stage starts: it exists, its JSON parses, its weights are whole.

    from sts.model_files import resolve_model, check_model_files, load_speech_contract
    model = resolve_model("runs/sft")                 # ModelNotFoundError: "runs/sft: no such model folder"
    check_model_files(model)                          # CorruptFileError naming config.json or a .safetensors
    vocab, tokenizer = load_speech_contract(model)    # + the whole sts_vocab.json checked (VocabError)

Hugging Face loaders fail on these with messages that name no file, or the wrong problem: a local
folder that does not exist becomes the hub's "Repo id must be in the form 'repo_name' or
'namespace/repo_name'"; a truncated weights file is safetensors' "Error while deserializing header:
invalid header length"; a broken config.json is json's "line 1 column 2". The checks here run
before the loader, on local folders only (a hub id is left to the hub), read headers and small
JSON files only, and raise typed `sts.errors` errors that name the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

from sts.decoding_info import DECODING_FILE
from sts.errors import CorruptFileError, ModelNotFoundError
from sts.io import read_json, write_bytes_atomic
from sts.llasa_layout import MARKERS
from sts.tasks import TASKS_FILE
from sts.vocab import VOCAB_FILE, SpeechVocab

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
"""A string the hub could take as a repo id (`namespace/name` or `name`), per huggingface_hub's
`validate_repo_id`: word characters, '-', '.', no '--' or '..', at most one '/', 96 characters."""


def looks_like_hub_id(name: str) -> bool:
    """Whether `name` has the form of a Hugging Face repo id (it may still be a local path)."""
    return bool(_HUB_ID.match(name)) and "--" not in name and ".." not in name and not name.endswith(".")


def resolve_model(model: str | Path, *, what: str = "model") -> str:
    """`model` as a string for `from_pretrained`, after checking a local folder exists.

    An existing folder is returned as is (a file is an error). A name that is not a folder here and
    cannot be a hub id (an absolute or `./` path, two slashes, `..`) is a `ModelNotFoundError`
    ("PATH: no such {what} folder"); so is a hub-id-shaped name when the hub is off
    (`HF_HUB_OFFLINE=1`) and the hub cache does not hold it. Other hub ids are left to the hub.
    """
    name = str(model)
    path = Path(name).expanduser()
    if path.is_dir():
        return name
    if path.exists():
        raise ModelNotFoundError(f"{name}: is a file, not a {what} folder")
    if not looks_like_hub_id(name):
        raise ModelNotFoundError(f"{name}: no such {what} folder")
    if _hub_offline() and not _in_hub_cache(name):
        raise ModelNotFoundError(
            f"{name}: no such {what} folder here, and not in the Hugging Face cache (the hub is off: "
            "HF_HUB_OFFLINE=1)"
        )
    return name


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:
        return True
    return bool(constants.HF_HUB_OFFLINE)


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file (None when it is): the 8-byte little-endian header
    length, a JSON header, and tensor data ending exactly at the end of the file (the format as
    documented at https://github.com/huggingface/safetensors). The problem starts with the file name."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name}: {size} bytes, shorter than a safetensors header"
            (header_len,) = struct.unpack("<Q", head)
            if 8 + header_len > size:
                return f"{path.name}: {size} bytes, but its header alone claims {8 + header_len}"
            header = json.loads(f.read(header_len))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return f"{path.name}: unreadable safetensors header ({err})"
    if not isinstance(header, dict):
        return f"{path.name}: its safetensors header is not a JSON object"
    try:
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError):
        return f"{path.name}: its safetensors header has a tensor entry without data_offsets"
    expected = 8 + header_len + max(ends, default=0)
    if expected != size:
        return f"{path.name}: {size} bytes, but its header describes {expected} (truncated or padded)"
    return None


def check_model_files(model: str | Path) -> None:
    """For a local model folder: its JSON files (config.json, tokenizer.json, tokenizer_config.json,
    the weights index) parse, and every `*.safetensors` file (and each shard the index names) is whole.

    Raises `CorruptFileError` naming the file (with `:LINE:COLUMN` for JSON) and the problem, or
    `FileNotFoundError` for a shard the index names that is not there. A hub id does nothing.
    """

    folder = Path(model).expanduser()
    if not folder.is_dir():
        return
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json", "model.safetensors.index.json"):
        if (folder / name).is_file():
            read_json(folder / name, what=name)
    weights = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = (read_json(index) or {}).get("weight_map", {})
        for shard in sorted(set(weight_map.values()) if isinstance(weight_map, dict) else ()):
            if not (folder / shard).is_file():
                raise FileNotFoundError(
                    2, f"weights shard named by {index.name} is missing", str(folder / shard)
                )
            weights.append(folder / shard)
    for path in dict.fromkeys(weights):
        problem = safetensors_problem(path)
        if problem is not None:
            raise CorruptFileError(
                f"{path}: {problem.split(': ', 1)[1]} (a truncated or damaged weights file)"
            )


def load_speech_contract(model: str | Path, *, with_config: bool = True):
    """(vocab, tokenizer) of a local speech-LM folder, the whole `sts_vocab.json` checked against the
    tokenizer and (with `with_config`) the embedding rows of config.json (`SpeechVocab.check_tokenizer`,
    with Llasa's markers for an adopted Llasa).

    Checks the folder first (`resolve_model`, `check_model_files`). Raises `ModelNotFoundError`,
    `CorruptFileError` or `sts.vocab.VocabError`, each naming the file.
    """
    from transformers import AutoConfig, AutoTokenizer

    name = resolve_model(model)
    check_model_files(name)
    vocab = SpeechVocab.load(name)
    tokenizer = AutoTokenizer.from_pretrained(name)
    config = AutoConfig.from_pretrained(name) if with_config else None
    adopted = vocab.speech_start_token in MARKERS  # a Llasa layout: its first marker ends the text ids
    vocab.check_tokenizer(tokenizer, config, layout_markers=MARKERS if adopted else ())
    return vocab, tokenizer


DECODING_FILES = (VOCAB_FILE, TASKS_FILE, DECODING_FILE)
"""The files beside a checkpoint's weights that say how it is decoded, besides the weights, config and
tokenizer files `save_pretrained` writes: `sts_vocab.json` (where the speech tokens are),
`sts_tasks.json` (the s2st answer format; without it a model reads as `direct`) and
`sts_decoding.json` (the measured duration ratios that bound a speech output). `sts-infer` reads
exactly these (`infer.translate.Translator.from_checkpoint`); every command that writes a copy of a
checkpoint carries them with `copy_decoding_files` (`sts-train merge-lora`, `sts-train adopt-axolotl`)."""


def copy_decoding_files(src: str | Path, dst: str | Path) -> list[str]:
    """Copy the `DECODING_FILES` that `src` holds into the folder `dst` (atomically, replacing any
    there); returns the names copied. `sts_vocab.json` is loaded and saved again, because it records a
    local codec and base model relative to its own folder (`SpeechVocab.save`); the others are copied
    byte for byte. Raises `VocabError` for an unreadable `sts_vocab.json`, OSError for the others."""

    src, dst = Path(src), Path(dst)
    copied = []
    for name in DECODING_FILES:
        if not (src / name).is_file():
            continue
        if name == VOCAB_FILE:
            SpeechVocab.load(src).save(dst)
        else:
            write_bytes_atomic(dst / name, (src / name).read_bytes())
        copied.append(name)
    return copied


FINGERPRINT_FILES = (
    "config.json",
    "sts_vocab.json",
    "sts_tasks.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "adapter_config.json",
    "model.safetensors.index.json",
)
"""The small files of a model folder that `model_fingerprint` hashes whole (with every `*.safetensors`)."""
_SAMPLE_BLOCKS, _SAMPLE_BYTES = 16, 1 << 16


def model_fingerprint(model: str | Path, *, full: bool = False) -> str | None:
    """A short hash (16 hex digits) of what a local model folder holds, or None for a hub id (or any
    name that is not a folder here).

    Hashed: the folder's config, vocabulary, task-format and tokenizer files (`FINGERPRINT_FILES`)
    whole, and every `*.safetensors` file by its size, its header and, for files over 64 MiB, 16
    evenly spaced 64 KiB blocks of its tensor data (`full`: every byte; ~1.5 GB/s of SHA-256). Two
    trainings of one architecture differ in every block, so a folder moved or copied elsewhere keeps
    its fingerprint and another model copied into the same path does not (not a defence against a
    file made to collide: use `full` for that). Costs milliseconds unless `full`.
    """

    folder = Path(model).expanduser()
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for name in FINGERPRINT_FILES:
        if (folder / name).is_file():
            digest.update(f"{name}\0".encode() + (folder / name).read_bytes())
    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as f:
            if full or size <= _SAMPLE_BLOCKS * _SAMPLE_BYTES * 64:
                while block := f.read(1 << 20):
                    digest.update(block)
                continue
            (header_len,) = struct.unpack("<Q", f.read(8))
            digest.update(f.read(min(header_len, size)))
            start = 8 + header_len
            step = max(1, (size - start - _SAMPLE_BYTES) // (_SAMPLE_BLOCKS - 1))
            for k in range(_SAMPLE_BLOCKS):
                f.seek(min(start + k * step, size - _SAMPLE_BYTES))
                digest.update(f.read(_SAMPLE_BYTES))
    return digest.hexdigest()[:16]
