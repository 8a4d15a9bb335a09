"""Done-when of issue 16: a tiny model trained to loop loses most of its loops after a short DPO run on
pairs it generated itself and the package's metrics scored (loop rate of sampled answers, `detect_loop`)."""

from __future__ import annotations

import pytest

from sts.config import make_config
from train.config import TrainConfig
from train.dpo import train_dpo
from train.pairs import PairConfig, build_pairs
from train.testing import write_looping_shards
from train.trainer import train


def loop_rate(card: dict) -> float:
    """Share of the sampled answers in which `detect_loop` found a loop (the card counts them by kind)."""
    return sum(card["loops"].values()) / card["answers"]


@pytest.mark.slow  # ~30 s: SFT 60 steps, two rounds of sampling, DPO 30 steps
def test_dpo_on_self_generated_pairs_removes_most_loops(tiny_lm_dir, tmp_path):
    from tokenizer_ext import ExtendConfig, extend_tokenizer

    model = tmp_path / "lm-speech"
    extend_tokenizer(ExtendConfig(str(tiny_lm_dir), model, num_speech_tokens=64))
    corpus = write_looping_shards(tmp_path / "corpus", num_codes=64)  # the same prompt: half loops, half not
    common = dict(data__seq_len=256, data__eval_fraction=0.0, eval__every=0, log__every=20, log__keep_last=1,
                  log__logger="none", eval__generate=False, optim__warmup_steps=5)  # fmt: skip
    sft = train(make_config(TrainConfig, stage="sft", model=str(model), out_dir=tmp_path / "sft",
                            data__shards=[str(corpus)], optim__batch_size=8,
                            sft__task_weights={"tts": 1.0, "s2st": 0.0, "asr": 0.0, "s2tt": 0.0, "t2tt": 0.0},
                            optim__max_steps=60, optim__lr=5e-3, log__save_every=60, **common))  # fmt: skip

    def sample(checkpoint, out):
        return build_pairs(PairConfig(model=str(checkpoint), shards=[str(corpus)], out_dir=out, tasks=["tts"],
                                      samples=4, asr="none", speaker=False, max_new_tokens=300, seq_len=256,
                                      fast=False, skip_eval_rows=False, prompts_per_chunk=16))  # fmt: skip

    before = sample(sft, tmp_path / "pairs")
    assert loop_rate(before) >= 0.3 and before["pairs"] >= 10  # it loops, and some answers do not
    dpo = train_dpo(make_config(TrainConfig, stage="dpo", model=str(sft), out_dir=tmp_path / "dpo",
                                dpo__pairs=[str(tmp_path / "pairs")], optim__batch_size=4, optim__max_steps=30,
                                optim__lr=1e-3, log__save_every=30, **common))  # fmt: skip
    after = sample(dpo, tmp_path / "after")
    assert loop_rate(after) <= 0.3 * loop_rate(before)
    assert after["groups"]["tts:en"]["end_marker_rate"] >= before["groups"]["tts:en"]["end_marker_rate"]
