"""Shared fixtures: tiny models are built once per test session, in a temporary directory."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch


def threads_from_env(value: str | None) -> int:
    """The thread count an OMP_NUM_THREADS value asks for: its first integer (a list such as "4,2"
    gives the outer level, 4) when it is >= 1, else 1 (unset, empty, "0", or not a number)."""
    match = re.match(r"\s*(\d+)", value or "")
    return max(int(match.group(1)), 1) if match else 1


TEST_THREADS = threads_from_env(os.environ.get("OMP_NUM_THREADS"))
"""Torch threads for the tests: OMP_NUM_THREADS when set (the suite is checked at 1 and 2), else 1, as
another process on a 2-core machine can slow torch's default threading 50x. A comparison that needs
one thread count on both sides says so with `@pytest.mark.threads(n)`."""
torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True)
def _pinned_threads(request):
    """`@pytest.mark.threads(n)`: torch runs the test on n threads, then goes back to TEST_THREADS."""
    marker = request.node.get_closest_marker("threads")
    if marker is None:
        yield
        return
    torch.set_num_threads(marker.args[0])
    try:
        yield
    finally:
        torch.set_num_threads(TEST_THREADS)


TINY_SPEECH_TOKENS = 1024
"""Speech block size of the tiny extended LM: the tiny XCodec2's codebook (4**5)."""


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    from sts.testing import save_tiny_lfm2

    return save_tiny_lfm2(tmp_path_factory.mktemp("models") / "tiny-lfm2")


@pytest.fixture(scope="session")
def extended_lm_dir(tiny_lm_dir, tmp_path_factory) -> Path:
    from tokenizer_ext import ExtendConfig, extend_tokenizer

    out = tmp_path_factory.mktemp("models") / "tiny-lfm2-speech"
    extend_tokenizer(ExtendConfig(str(tiny_lm_dir), out, num_speech_tokens=TINY_SPEECH_TOKENS))
    return out


@pytest.fixture(scope="session")
def extended_tokenizer(extended_lm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(extended_lm_dir)


@pytest.fixture(scope="session")
def speech_vocab(extended_lm_dir):
    from sts.vocab import SpeechVocab

    return SpeechVocab.load(extended_lm_dir)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    """Two tiny encoded shards (`train.testing.write_tiny_encoded_shards`, 1,024 codes), one set per test module."""
    from train.testing import write_tiny_encoded_shards

    return write_tiny_encoded_shards(tmp_path_factory.mktemp("encoded"), num_codes=TINY_SPEECH_TOKENS)
