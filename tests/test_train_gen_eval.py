"""Generation metrics during training: the log shows them at each eval, their values are right on
forced models, early stop fires on a rising loop rate, resume stays exact, ASR-chrF++ with a codec."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import types

import numpy as np
import pytest
import torch

from sts.config import make_config
from sts.generation import allowed_token_ids
from train.checkpoint import list_checkpoints
from train.cli import main
from train.config import CONFIG_DIR, TrainConfig
from train.dev_subset import build_dev_subset, row_budget
from train.gen_eval import GenEvaluator, evaluate_generation, generation_lm
from train.gen_metrics import early_stop_reason, flatten, headline, summarize
from train.logger import read_metrics
from train.rows import is_eval_row
from train.testing import tiny_cli_args, tiny_config

GROUPS = {"s2st:ja-en", "s2st:en-ja", "s2tt:ja-en", "s2tt:en-ja", "t2tt:ja-en", "t2tt:en-ja",
          "asr:ja", "asr:en", "tts:ja", "tts:en"}  # fmt: skip
SPEECH_GROUPS = {g for g in GROUPS if g.startswith(("s2st", "tts"))}


def tiny_lm(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


# ---------------------------------------------------------------- the training log (done-when)


def test_sft_log_shows_generation_metrics_at_each_eval(extended_lm_dir, shards, tmp_path, capsys):
    out = tmp_path / "sft"
    assert main(tiny_cli_args("sft", extended_lm_dir, shards, out)) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("gen_eval step")]
    assert [line.split(" | ")[0] for line in printed] == ["gen_eval step 2/4", "gen_eval step 4/4"]
    assert " | speech out n 8 loop " in printed[0] and " | text out n 12 loop " in printed[0]
    assert "chrF++" in printed[0] and printed[0].endswith(" s")

    records = read_metrics(out, kind="gen_eval")
    assert [r["step"] for r in records] == [2, 4]  # the evals of tiny_sft.yaml (eval.every 2)
    for record in records:
        groups = {k.split("/")[1] for k in record if k.startswith("gen/") and k.count("/") == 2}
        assert groups == GROUPS | {"speech_out", "text_out"}
        for group in GROUPS:
            assert record[f"gen/{group}/n"] == 2  # eval.samples 2
            for metric in ("loop_rate", "end_marker_rate", "stray_id_rate"):
                assert 0.0 <= record[f"gen/{group}/{metric}"] <= 1.0
            assert record[f"gen/{group}/length_ratio_median"] >= 0.0
        for group in GROUPS - SPEECH_GROUPS:
            assert 0.0 <= record[f"gen/{group}/chrf"] <= 100.0
        assert not any(k.endswith("/asr_chrf") for k in record)  # tiny_sft.yaml: eval.asr none
        assert record["gen/speech_out/n"] == 8 and record["gen/text_out/n"] == 12
        assert record["gen/seconds"] > 0
    assert (out / "gen_eval.png").stat().st_size > 1000
    state = json.loads((out / "checkpoint-0000004" / "trainer_state.json").read_text())
    assert state["gen_loop_rates"] == [r["gen/speech_out/loop_rate"] for r in records]


def test_cpt_decodes_speech_continuations(extended_lm_dir, shards, tmp_path):
    out = tmp_path / "cpt"
    assert main(tiny_cli_args("cpt", extended_lm_dir, shards, out, "--eval.every", "4")) == 0
    (record,) = read_metrics(out, kind="gen_eval")
    assert record["gen/continue:speech_ja/n"] == 2 and record["gen/continue:speech_en/n"] == 2
    assert record["gen/speech_out/n"] == 4 and "gen/text_out/n" not in record


# ---------------------------------------------------------------- the dev subset


def test_dev_subset_is_fixed_and_held_out(
    extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path
):
    cfg = tiny_config("sft", extended_lm_dir, shards, tmp_path, eval__samples=3)
    items = build_dev_subset(cfg, extended_tokenizer, speech_vocab)
    again = build_dev_subset(cfg, extended_tokenizer, speech_vocab)
    assert [(i.group, i.row_id, i.prompt.tolist()) for i in items] == [
        (i.group, i.row_id, i.prompt.tolist()) for i in again
    ]
    assert {i.group for i in items} == GROUPS
    assert all(sum(i.group == g for i in items) == 3 for g in GROUPS)
    assert all(is_eval_row(i.row_id, cfg.data.eval_fraction) for i in items)
    for i in items:
        assert i.output == ("speech" if i.group in SPEECH_GROUPS else "text")
        assert i.max_new_tokens == row_budget(i.ref_len, i.output, 50.0, cfg.eval.max_new_tokens)
        if i.output == "speech":  # the speech start marker is prefilled, as sts-infer does
            assert i.prompt[-1] == speech_vocab.speech_start_id

    no_split = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, eval_fraction=0.0))
    first = build_dev_subset(no_split, extended_tokenizer, speech_vocab)
    assert {i.row_id for i in first} == {"tiny-0-0", "tiny-0-1", "tiny-0-2"}  # the first corpus rows


def test_row_budget_is_reference_relative():
    assert row_budget(100, "speech", 50.0, 1000) == 250  # 2 x 100 + 1 s
    assert row_budget(600, "speech", 50.0, 1000) == 1000  # capped
    assert row_budget(960, "speech", 50.0, 1000) is None  # a finished output could not fit
    assert row_budget(20, "text", 50.0, 1000) == 56  # 2 x 20 + 16


# ---------------------------------------------------------------- metric values on forced models


def forced(lm, speech_id, text_id, *, end_after=None, vocab=None, eos=None):
    """Bias the LM's logits: speech id +100, text id +50; from step `end_after` on, the end ids instead
    (eos one higher than the speech end marker). Steps are counted per generate call."""
    calls = {"n": 0}
    real_generate = lm.generate

    def generate(*args, **kwargs):
        calls["n"] = 0
        return real_generate(*args, **kwargs)

    def hook(module, inputs, logits):
        bias = torch.zeros(logits.shape[-1])
        if end_after is not None and calls["n"] >= end_after:
            bias[vocab.speech_end_id], bias[eos] = 200.0, 201.0
        else:
            bias[speech_id], bias[text_id] = 100.0, 50.0
        calls["n"] += 1
        return logits + bias.to(logits.dtype)

    lm.generate = generate
    lm.get_output_embeddings().register_forward_hook(hook)
    return lm


def dev_items(cfg, tokenizer, vocab, speech_budget, text_budget):
    items = build_dev_subset(cfg, tokenizer, vocab)
    return [
        dataclasses.replace(i, max_new_tokens=speech_budget if i.output == "speech" else text_budget)
        for i in items
    ]


def test_a_model_forced_to_loop_scores_loop_rate_one(
    extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path
):
    cfg = tiny_config("sft", extended_lm_dir, shards, tmp_path, eval__fast=False)
    items = dev_items(cfg, extended_tokenizer, speech_vocab, speech_budget=130, text_budget=40)
    text_id = int(allowed_token_ids(speech_vocab, extended_tokenizer, "text")[20])
    lm = forced(tiny_lm(extended_lm_dir), speech_vocab.speech_token_offset + 7, text_id)
    groups = evaluate_generation(
        lm, items, tokenizer=extended_tokenizer, vocab=speech_vocab, cfg=cfg, pad_id=0
    )
    assert set(groups) == GROUPS | {"speech_out", "text_out"}
    for name, m in groups.items():
        speech = name in SPEECH_GROUPS or name == "speech_out"
        assert m["loop_rate"] == 1.0 and m["end_marker_rate"] == 0.0, name
        # the unconstrained argmax is the speech id everywhere: right for speech, stray for text
        assert m["stray_id_rate"] == (0.0 if speech else 1.0), name
    assert groups["t2tt:ja-en"]["chrf"] < 10
    assert not lm.training


def test_forced_lengths_give_exact_ratios_and_end_markers(
    extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path
):
    cfg = tiny_config("sft", extended_lm_dir, shards, tmp_path, eval__fast=False)
    items = dev_items(cfg, extended_tokenizer, speech_vocab, speech_budget=60, text_budget=30)
    text_id = int(allowed_token_ids(speech_vocab, extended_tokenizer, "text")[20])
    lm = forced(tiny_lm(extended_lm_dir), speech_vocab.speech_token_offset + 7, text_id, end_after=5,
                vocab=speech_vocab, eos=extended_tokenizer.eos_token_id)  # fmt: skip
    lm.train()  # evaluate_generation decodes in eval mode and gives the mode back
    groups = evaluate_generation(
        lm, items, tokenizer=extended_tokenizer, vocab=speech_vocab, cfg=cfg, pad_id=0
    )
    assert lm.training
    for name, m in groups.items():
        members = [i for i in items if i.group == name or name.endswith("_out") and i.output == name[:-4]]
        ratios = [5 / i.ref_len for i in members]  # 5 ids, then the end id
        assert m["n"] == len(members)
        assert m["loop_rate"] == 0.0 and m["end_marker_rate"] == 1.0
        assert m["length_ratio_mean"] == pytest.approx(np.mean(ratios))
        assert m["length_ratio_median"] == pytest.approx(np.median(ratios))
        # 6 steps a row: speech rows wanted eos (text) at the last; text rows wanted the speech id at 5
        speech = name in SPEECH_GROUPS or name == "speech_out"
        assert m["stray_id_rate"] == pytest.approx(1 / 6 if speech else 5 / 6)


def test_text_and_asr_chrf_on_known_outputs():
    from sts.metrics import asr_bleu, chrf
    from train.dev_subset import DevItem

    refs = ["Good morning.", "Where is the station?"]
    hyps = ["Good morning.", "Where is station"]
    items = [DevItem("t2tt:ja-en", "t2tt", "text", "en", np.zeros(3, np.int64), 4, r, 20) for r in refs]
    items += [DevItem("tts:en", "tts", "speech", "en", np.zeros(3, np.int64), 10, r, 70) for r in refs]
    decoded = [{"body": np.arange(4), "ended": True, "steps": 5, "wrong": 1} for _ in range(2)]
    decoded += [{"body": np.full(120, 9), "ended": False, "steps": 120, "wrong": 0} for _ in range(2)]
    groups = summarize(items, decoded, texts=[*hyps, None, None], transcripts=[None, None, *hyps])
    assert groups["t2tt:ja-en"]["chrf"] == pytest.approx(chrf(hyps, refs).score)  # raw text
    assert groups["tts:en"]["asr_chrf"] == pytest.approx(asr_bleu(hyps, refs, "en")[-1].score)  # normalized
    assert groups["t2tt:ja-en"]["chrf"] < groups["tts:en"]["asr_chrf"] < 100  # "station" vs "Station?"
    assert groups["t2tt:ja-en"]["stray_id_rate"] == pytest.approx(2 / 10)
    assert groups["t2tt:ja-en"]["loop_rate"] == 0.0 and groups["tts:en"]["loop_rate"] == 1.0
    assert groups["tts:en"]["length_ratio_mean"] == pytest.approx(12.0)
    flat = flatten(groups)
    assert flat["gen/text_out/chrf_mean"] == groups["t2tt:ja-en"]["chrf"]
    line = headline({**flat, "gen/seconds": 1.25})
    assert line.startswith("speech out n 2 loop 1.00 end 0.00 len 12.00 stray 0.000 ASR-chrF++ ")
    assert "| text out n 2 loop 0.00 end 1.00 len 1.00 stray 0.200 chrF++ " in line and line.endswith(
        "| 1.2 s"
    )


# ---------------------------------------------------------------- early stop


def test_early_stop_decision():
    assert early_stop_reason([0.1, 0.2, 0.3], None, 2) is None  # off
    assert early_stop_reason([0.2, 0.3], 0.25, 2) is None  # not enough evals yet
    assert early_stop_reason([0.1, 0.2, 0.3], 0.25, 2) == (
        "speech loop rate 0.300 > 0.25 and rising for 2 evals (0.100 -> 0.200 -> 0.300)"
    )
    assert early_stop_reason([0.1, 0.2, 0.22], 0.25, 2) is None  # rising but under the threshold
    assert early_stop_reason([0.3, 0.4, 0.4], 0.25, 2) is None  # above but flat at the end
    assert early_stop_reason([0.5, 0.3, 0.4], 0.25, 2) is None  # fell in between
    assert early_stop_reason([0.5, 0.3, 0.4], 0.25, 1) is not None


def test_a_rising_loop_rate_stops_the_run_for_good(extended_lm_dir, shards, tmp_path, monkeypatch, capsys):
    rates = iter([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    pooled = {"n": 4, "end_marker_rate": 0.0, "length_ratio_median": 2.0, "stray_id_rate": 0.0}

    def stub(self, model):  # the speech loop rate climbs at every eval
        return flatten({"speech_out": {**pooled, "loop_rate": next(rates)}})

    monkeypatch.setattr(GenEvaluator, "__call__", stub)
    out = tmp_path / "sft"
    args = tiny_cli_args("sft", extended_lm_dir, shards, out, "--optim.max-steps", "8", "--eval.every", "1",
                    "--log.save-every", "100", "--eval.early-stop-loop-rate", "0.25", "--eval.early-stop-patience", "2")  # fmt: skip
    assert main(args) == 0
    assert "early stop at step 3: speech loop rate 0.300 > 0.25" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]
    assert read_metrics(out, kind="early_stop")[0]["reason"].startswith("speech loop rate 0.300")
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-0000003"]  # the final checkpoint
    state = json.loads((out / "checkpoint-0000003" / "trainer_state.json").read_text())
    assert state["gen_loop_rates"] == [0.1, 0.2, 0.3] and state["stopped"].startswith("speech loop rate")

    assert main(args) == 0  # rerunning the command does not train past an early stop
    assert "the run stopped early at step 3" in capsys.readouterr().out
    assert len(read_metrics(out)) == 3


def test_shipped_configs_decode_at_each_eval():
    from sts.config import load_config

    # groups per output modality: sft 4 speech-out (s2st, tts) + 6 text-out; cpt 2 continuations
    for name, groups in (("sft_lfm2_350m.yaml", (4, 6)), ("cpt_lfm2_350m.yaml", (2,))):
        cfg = load_config(TrainConfig, CONFIG_DIR / name)
        assert cfg.eval.generate and cfg.eval.fast and cfg.eval.every > 0 and not cfg.eval.sampling.do_sample
        # the cost estimate in TrainConfig.gen_eval assumes one generate call per output modality
        assert all(cfg.eval.samples * n <= cfg.eval.batch_size for n in groups)
        assert cfg.eval.max_new_tokens == 1000 and cfg.eval.early_stop_loop_rate is None


def test_early_stop_needs_gen_eval():
    with pytest.raises(ValueError, match="needs eval.generate"):
        make_config(TrainConfig, eval__generate=False, eval__early_stop_loop_rate=0.5)
    with pytest.raises(ValueError, match="eval.tasks names unknown task"):
        make_config(TrainConfig, eval__tasks=["karaoke"])


# ---------------------------------------------------------------- resume, wrappers, sharding


def test_resume_with_sampled_gen_eval_is_exact(extended_lm_dir, shards, tmp_path):
    """Sampling reseeds torch; the RNG is given back, so the steps after a gen eval do not change."""
    out = tmp_path / "sft"
    args = tiny_cli_args("sft", extended_lm_dir, shards, out, "--optim.grad-accum", "2",
                         "--eval.sampling.do-sample", "--eval.sampling.temperature", "0.8")  # fmt: skip
    assert main(args) == 0
    straight = {r["step"]: r["loss"] for r in read_metrics(out)}
    straight_gen = read_metrics(out, kind="gen_eval")
    shutil.rmtree(out / "checkpoint-0000004")
    (out / "metrics.jsonl").unlink()
    assert main(args) == 0
    resumed = {r["step"]: r["loss"] for r in read_metrics(out)}
    assert resumed == pytest.approx({3: straight[3], 4: straight[4]}, rel=1e-6, abs=1e-7)
    (again,) = read_metrics(out, kind="gen_eval")
    expected = {k: v for k, v in straight_gen[1].items() if k != "gen/seconds"}
    assert {k: v for k, v in again.items() if k != "gen/seconds"} == pytest.approx(expected)
    state = json.loads((out / "checkpoint-0000004" / "trainer_state.json").read_text())
    assert state["gen_loop_rates"] == pytest.approx([r["gen/speech_out/loop_rate"] for r in straight_gen])


def test_generation_lm_unwraps_the_loss_wrapper_and_lora(extended_lm_dir):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from train.loss import CausalLMWithLoss

    lm = tiny_lm(extended_lm_dir)
    assert generation_lm(CausalLMWithLoss(lm)) is lm
    peft_model = get_peft_model(tiny_lm(extended_lm_dir), LoraConfig(r=2, target_modules=["q_proj"]))
    inner = generation_lm(CausalLMWithLoss(peft_model))
    assert type(inner).__name__ == "Lfm2ForCausalLM" and hasattr(inner, "generate")
    assert any("lora" in name for name, _ in inner.named_parameters())  # the adapters decode too


def test_sharded_weights_skip_with_one_logged_reason(
    extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path, caplog
):
    cfg = tiny_config("sft", extended_lm_dir, shards, tmp_path)
    rt = types.SimpleNamespace(shards_weights="FSDP", device=torch.device("cpu"))
    evaluator = GenEvaluator(cfg, extended_tokenizer, speech_vocab, rt, pad_id=0)
    with caplog.at_level(logging.WARNING, logger="train.gen_eval"):
        assert evaluator(None) == {} and evaluator(None) == {}
    assert [r.getMessage() for r in caplog.records].count(
        "gen eval: skipped under FSDP: rank 0 does not hold the whole model"
    ) == 1


# ---------------------------------------------------------------- ASR-chrF++ (codec + offline Whisper)


def speaking(lm, targets: dict[tuple, np.ndarray], vocab):
    """Make the LM say given codes: for a prompt in `targets`, step t emits code t, then the end marker."""
    state = {"codes": None, "t": 0}
    real_generate = lm.generate

    def generate(*args, input_ids, **kwargs):
        state["codes"], state["t"] = targets[tuple(input_ids[0].tolist())], 0  # batch 1, no padding
        return real_generate(*args, input_ids=input_ids, **kwargs)

    def hook(module, inputs, logits):
        codes, t = state["codes"], state["t"]
        target = vocab.speech_token_offset + int(codes[t]) if t < len(codes) else vocab.speech_end_id
        state["t"] += 1
        bias = torch.zeros(logits.shape[-1])
        bias[target] = 100.0
        return logits + bias.to(logits.dtype)

    lm.generate = generate
    lm.get_output_embeddings().register_forward_hook(hook)
    return lm


@pytest.mark.slow
def test_speech_output_is_scored_by_asr_chrf(
    extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path
):
    """Piper speech of the reference, through the demo codec, "generated" by a forced LM, is
    transcribed by offline Whisper and scores a high ASR-chrF++; an output with no speech scores 0."""
    pytest.importorskip("piper")
    pytest.importorskip("faster_whisper")
    pytest.importorskip("sacrebleu")
    import soxr

    from corpus_builder.interfaces import TTSRequest
    from corpus_builder.tts.offline import PiperTTS
    from sts.codec.melkmeans import MelKMeansCodec
    from sts.offline_models import offline_whisper_base
    from train.runtime import LocalRuntime
    from train.testing import PAIRS

    if offline_whisper_base() is None:
        pytest.skip("the offline Whisper base weights are not installed")
    tts = PiperTTS()
    speech = {}
    for result, (_, en) in zip(tts.synthesize([TTSRequest(en, "en") for _, en in PAIRS]), PAIRS, strict=True):
        speech[en] = soxr.resample(result.audio, result.sample_rate, 16000).astype(np.float32)
    codec = MelKMeansCodec.fit(list(speech.values()), codebook_size=256)
    cfg = tiny_config("sft", extended_lm_dir, shards, tmp_path, eval__asr="auto", eval__tasks=["tts"],
                      eval__codec=str(codec.save(tmp_path / "codec")), eval__samples=1,
                      eval__batch_size=1, eval__fast=False)  # fmt: skip
    items = [i for i in build_dev_subset(cfg, extended_tokenizer, speech_vocab) if i.group == "tts:en"]
    (item,) = items
    codes = codec.encode([speech[item.ref_text]])[0]
    items = [dataclasses.replace(item, max_new_tokens=len(codes) + 1)]
    evaluator = GenEvaluator(
        cfg, extended_tokenizer, speech_vocab, LocalRuntime(device="cpu"), pad_id=0, items=items
    )
    lm = speaking(tiny_lm(extended_lm_dir), {tuple(item.prompt.tolist()): codes}, speech_vocab)
    flat = evaluator(lm)
    assert flat["gen/tts:en/end_marker_rate"] == 1.0 and flat["gen/tts:en/length_ratio_mean"] > 0
    assert flat["gen/tts:en/asr_chrf"] > 40, flat  # Whisper heard "Good morning." (100 on 2026-11-25)
    assert flat["gen/speech_out/asr_chrf_mean"] == flat["gen/tts:en/asr_chrf"]

    silent = speaking(tiny_lm(extended_lm_dir), {tuple(item.prompt.tolist()): codes[:0]}, speech_vocab)
    # the end is held back at the first step (as in sts-infer): one frame, too short to transcribe
    assert evaluator(silent)["gen/tts:en/asr_chrf"] == 0.0
    assert not evaluator.speech_scorer.failed


def test_text_first_sft_decodes_its_chain_at_each_eval(extended_lm_dir, shards, tmp_path):
    """A text-first run: the checkpoint records its format, and the gen eval decodes s2st as text, then
    speech (the two constrained phases of `sts.generation.chain`)."""
    from sts.tasks import load_task_formats

    out = tmp_path / "sft-text-first"
    assert main([*tiny_cli_args("sft", extended_lm_dir, shards, out), "--sft.s2st-format", "text-first"]) == 0
    assert load_task_formats(out / "checkpoint-0000004") == {"s2st": "text-first"}
    [record, _] = read_metrics(out, kind="gen_eval")
    for group in ("s2st:ja-en", "s2st:en-ja"):
        assert record[f"gen/{group}/n"] == 2
        assert 0.0 <= record[f"gen/{group}/end_marker_rate"] <= 1.0
        assert 0.0 <= record[f"gen/{group}/stray_id_rate"] <= 1.0
