"""`sts-train cpt|sft` end to end on a tiny LFM2: steps run, loss falls, checkpoints load, resume is exact, NaN guard."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from sts.decoding_info import decoding_info, read_decoding_info
from sts.testing.numerics import assert_close_rounding
from sts.vocab import SpeechVocab
from train import trainer
from train.checkpoint import latest_checkpoint, list_checkpoints
from train.cli import main
from train.logger import read_metrics
from train.testing import checkpoint_weights, tiny_cli_args, tiny_config


def test_cpt_cli_runs_and_writes_loadable_checkpoints(extended_lm_dir, shards, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    text = tmp_path / "text.txt"
    text.write_text("hello world, this is text.\n\nanother document about stations.\n")
    out = tmp_path / "cpt"
    assert main(tiny_cli_args("cpt", extended_lm_dir, shards, out, "--cpt.text-files", str(text))) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train step")]
    assert len(lines) == 4 and lines[0].startswith("train step 1/4 | loss ")  # one line per step

    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-0000002", "checkpoint-0000004"]
    assert not list(out.glob(".*tmp"))
    last = latest_checkpoint(out)
    assert (last / "sts_vocab.json").is_file() and (last / "train_config.yaml").is_file()
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 4
    # the training corpus's duration ratios travel with the weights (sts-infer's speech budget)
    assert read_decoding_info(last) == json.loads(json.dumps(decoding_info(shards)))
    vocab = SpeechVocab.load(last)
    assert vocab == SpeechVocab.load(extended_lm_dir)

    lm = AutoModelForCausalLM.from_pretrained(last)  # plain transformers, no custom code
    assert lm.get_output_embeddings().weight.shape[0] == vocab.vocab_size
    base = AutoModelForCausalLM.from_pretrained(extended_lm_dir)
    moved = [k for k, v in lm.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert moved, "training changed the weights"
    ids = torch.tensor([[vocab.speech_start_id, vocab.speech_token_offset + 5, vocab.speech_end_id]])
    assert torch.isfinite(lm(ids).logits).all()

    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and r["tokens"] > 0 for r in records)
    assert records[0]["lr"] == pytest.approx(3e-3)  # warm-up of 1 step, then cosine decay
    assert records[-1]["lr"] < records[1]["lr"]


def test_sft_cli_runs_with_eval_loss_per_task(extended_lm_dir, shards, tmp_path):
    out = tmp_path / "sft"
    args = tiny_cli_args("sft", extended_lm_dir, shards, out, "--optim.max-steps", "2", "--log.save-every",
                         "1", "--log.keep-last", "1")  # fmt: skip
    assert main(args) == 0
    evals = read_metrics(out, kind="eval")
    assert [r["step"] for r in evals] == [2]
    tasks = {k.split("/")[1] for k in evals[0] if k.startswith("loss/")}
    assert {
        "s2st:ja-en",
        "s2st:en-ja",
        "asr:ja",
        "asr:en",
        "tts:ja",
        "tts:en",
        "s2tt:ja-en",
        "t2tt:en-ja",
    } <= tasks
    assert all(np.isfinite(v) for k, v in evals[0].items() if k.startswith("loss/"))
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-0000002"]  # log.keep_last 1


def test_loss_falls_on_a_repeated_batch(extended_lm_dir, shards, tmp_path):
    from transformers import AutoTokenizer

    from train.data import build_doc_stores
    from train.loss import CausalLMWithLoss
    from train.packing import PackedStream

    cfg = tiny_config("sft", extended_lm_dir, shards, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(extended_lm_dir)
    store, _ = build_doc_stores(cfg, tokenizer, SpeechVocab.load(extended_lm_dir))
    arrays = PackedStream(store, None, cfg.data.seq_len, seed=0).batch(0, 2)
    batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
    torch.manual_seed(0)
    model = CausalLMWithLoss(trainer.load_model(cfg), impl="chunked", chunk_tokens=64)
    optimizer = torch.optim.AdamW(trainer.param_groups(model, 0.0), lr=3e-3)
    losses = []
    for _ in range(20):
        loss_sum, n = trainer.compute_loss(model, batch)
        (loss_sum / n).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append((loss_sum / n).item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(b < a for a, b in zip(losses[:4], losses[1:5], strict=True)), losses


@pytest.mark.parametrize("stage", ["cpt", "sft"])
def test_resume_continues_with_the_same_step_and_loss(extended_lm_dir, shards, tmp_path, stage):
    out = tmp_path / stage
    args = tiny_cli_args(stage, extended_lm_dir, shards, out, "--eval.every", "0", "--optim.grad-accum", "2")
    assert main(args) == 0
    straight = {r["step"]: r["loss"] for r in read_metrics(out)}
    final = checkpoint_weights(out / "checkpoint-0000004")

    # interrupted after the checkpoint at step 2: run the same command again
    shutil.rmtree(out / "checkpoint-0000004")
    (out / "metrics.jsonl").unlink()
    assert main(args) == 0
    resumed = {r["step"]: r["loss"] for r in read_metrics(out)}
    assert sorted(resumed) == [3, 4]
    assert resumed[3] == pytest.approx(straight[3], rel=1e-6, abs=1e-7)
    assert resumed[4] == pytest.approx(straight[4], rel=1e-6, abs=1e-7)
    again = checkpoint_weights(out / "checkpoint-0000004")
    for k in final:
        torch.testing.assert_close(again[k], final[k], rtol=1e-6, atol=1e-7)

    assert main(args) == 0  # a finished run: nothing left to do
    assert len(read_metrics(out)) == 2


def _nan_on_steps(monkeypatch, bad_steps: set[int]):
    """Make compute_loss return NaN on the given (1-based) steps."""
    real, calls = trainer.compute_loss, {"n": 0}

    def compute_loss(model, batch):
        loss, n = real(model, batch)
        if model.training:
            calls["n"] += 1
            if calls["n"] in bad_steps:
                return loss * float("nan"), n
        return loss, n

    monkeypatch.setattr(trainer, "compute_loss", compute_loss)


def test_nan_loss_step_is_skipped(extended_lm_dir, shards, tmp_path, monkeypatch):
    _nan_on_steps(monkeypatch, {2})
    out = tmp_path / "cpt"
    assert main(tiny_cli_args("cpt", extended_lm_dir, shards, out)) == 0
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[1]["skipped"] == "non-finite loss or gradient" and "loss" not in records[1]
    assert np.isfinite(records[3]["loss"])
    # a skipped step saves nothing (its checkpoint would repeat the last good one); the run goes on
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-0000004"]
    assert all(torch.isfinite(v).all() for v in checkpoint_weights(out / "checkpoint-0000004").values())


def test_consecutive_nan_losses_stop_the_run_without_a_nan_checkpoint(
    extended_lm_dir, shards, tmp_path, monkeypatch, capsys
):
    _nan_on_steps(monkeypatch, {2, 3, 4})
    out = tmp_path / "cpt"
    rc = main(
        tiny_cli_args(
            "cpt", extended_lm_dir, shards, out, "--log.save-every", "1", "--optim.max-bad-steps", "2"
        )
    )
    assert rc == 1
    assert "2 consecutive non-finite steps" in capsys.readouterr().err
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-0000001"]
    assert [r.get("bad_steps") for r in read_metrics(out)] == [None, 1, 2]


def test_checkpoint_with_nan_weights_is_refused(extended_lm_dir, tmp_path):
    from transformers import AutoTokenizer

    from train.checkpoint import save_checkpoint
    from train.loss import CausalLMWithLoss
    from train.runtime import LocalRuntime

    cfg = tiny_config("cpt", extended_lm_dir, [], tmp_path)
    model = CausalLMWithLoss(trainer.load_model(cfg))
    optimizer = torch.optim.AdamW(model.parameters())
    rt = LocalRuntime()
    model, optimizer = rt.prepare(
        model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    )
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    tokenizer = AutoTokenizer.from_pretrained(extended_lm_dir)
    with pytest.raises(FloatingPointError, match="NaN"):
        save_checkpoint(rt, model, optimizer, tokenizer, SpeechVocab.load(extended_lm_dir), cfg, {"step": 1})
    assert list_checkpoints(tmp_path) == []


def test_lr_schedule_warmup_then_cosine(tmp_path):
    cfg = tiny_config(
        "cpt",
        "m",
        [],
        tmp_path,
        optim__lr=1.0,
        optim__warmup_steps=4,
        optim__max_steps=14,
        optim__min_lr_ratio=0.1,
    )
    f = trainer.lr_lambda(cfg)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(9) == pytest.approx(0.55) and f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)


def test_accelerate_runtime_matches_the_local_loop_and_resumes(extended_lm_dir, shards, tmp_path):
    pytest.importorskip("accelerate")
    local, acc = tmp_path / "local", tmp_path / "acc"
    assert main(tiny_cli_args("cpt", extended_lm_dir, shards, local, "--runtime.distributed", "none")) == 0
    args = tiny_cli_args("cpt", extended_lm_dir, shards, acc, "--runtime.distributed", "accelerate")
    assert main(args) == 0
    assert (
        acc / "checkpoint-0000002" / "train_state" / "model.safetensors"
    ).is_file()  # accelerate's own state
    expected = {r["step"]: r["loss"] for r in read_metrics(local)}
    assert {r["step"]: r["loss"] for r in read_metrics(acc)} == pytest.approx(expected, rel=1e-6)

    shutil.rmtree(acc / "checkpoint-0000004")
    (acc / "metrics.jsonl").unlink()
    assert main(args) == 0
    assert {r["step"]: r["loss"] for r in read_metrics(acc)} == pytest.approx(
        {3: expected[3], 4: expected[4]}, rel=1e-6
    )


def test_lora_trains_adapters_and_resumes(extended_lm_dir, shards, tmp_path):
    pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    args = tiny_cli_args("sft", extended_lm_dir, shards, out, "--lora.r", "4", "--eval.every", "0")
    assert main(args) == 0
    last = latest_checkpoint(out)
    assert (last / "adapter_config.json").is_file() and (last / "sts_vocab.json").is_file()
    straight = {r["step"]: r["loss"] for r in read_metrics(out)}
    assert straight[4] < straight[1]
    lm = AutoModelForCausalLM.from_pretrained(last)  # transformers reads the adapter folder through peft
    assert any("lora" in name for name, _ in lm.named_parameters())

    shutil.rmtree(last)
    (out / "metrics.jsonl").unlink()
    assert main(args) == 0
    resumed = {r["step"]: r["loss"] for r in read_metrics(out)}
    assert resumed == pytest.approx({3: straight[3], 4: straight[4]}, rel=1e-6)


def test_bf16_autocast_and_gradient_checkpointing_run(extended_lm_dir, shards, tmp_path):
    out = tmp_path / "bf16"
    args = tiny_cli_args("sft", extended_lm_dir, shards, out, "--runtime.precision", "bf16", "--runtime.gradient-checkpointing",
                    "--optim.max-steps", "2", "--eval.every", "0")  # fmt: skip
    assert main(args) == 0
    records = read_metrics(out)
    assert len(records) == 2 and all(np.isfinite(r["loss"]) for r in records)
    from safetensors import safe_open

    with safe_open(str(out / "checkpoint-0000002" / "model.safetensors"), "pt") as f:
        assert f.get_slice(next(iter(f.keys()))).get_dtype() == "F32"  # fp32 master weights are saved


def test_gradient_checkpointing_gives_the_same_gradients(extended_lm_dir, tmp_path):
    from train.loss import CausalLMWithLoss

    ids = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(0))
    grads = []
    for ckpt in (False, True):
        cfg = tiny_config("cpt", extended_lm_dir, [], tmp_path, runtime__gradient_checkpointing=ckpt)
        model = CausalLMWithLoss(trainer.load_model(cfg)).train()
        loss, _ = model(ids, ids)
        loss.backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
    cfg = model.lm.config  # the recomputed forward may round otherwise: float32, hidden + vocab + tokens
    n = cfg.hidden_size + cfg.vocab_size + ids.numel()
    for k in grads[0]:
        assert_close_rounding(grads[1][k], grads[0][k], reduction_size=n, msg=k)


def test_metric_logger_lines_and_noop(tmp_path, capsys):
    from train.logger import MetricLogger

    logger = MetricLogger(tmp_path, max_steps=10, backend="none")
    logger.log(3, {"loss": 2.5, "lr": 1e-4, "tokens": 12})
    logger.close()
    assert capsys.readouterr().out.strip() == "train step 3/10 | loss 2.5 | lr 0.0001 | tokens 12"
    assert read_metrics(tmp_path) == [{"kind": "train", "step": 3, "loss": 2.5, "lr": 1e-4, "tokens": 12}]
    auto = MetricLogger(tmp_path / "auto", max_steps=10, backend="auto")  # tensorboard only when installed
    auto.log(1, {"loss": 1.0})
    auto.close()
    assert len(read_metrics(tmp_path / "auto")) == 1
    capsys.readouterr()
    quiet = MetricLogger(tmp_path / "rank1", max_steps=10, enabled=False)  # not rank 0
    quiet.log(1, {"loss": 1.0})
    assert capsys.readouterr().out == "" and not (tmp_path / "rank1").exists()


@pytest.mark.slow
def test_compiled_layers_train_and_save_plain_checkpoints(extended_lm_dir, shards, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "compiled"
    assert (
        main(
            tiny_cli_args("cpt", extended_lm_dir, shards, out, "--runtime.compile", "--optim.max-steps", "2")
        )
        == 0
    )
    eager = tmp_path / "eager"
    assert main(tiny_cli_args("cpt", extended_lm_dir, shards, eager, "--optim.max-steps", "2")) == 0
    got, expected = ({r["step"]: r["loss"] for r in read_metrics(d)} for d in (out, eager))
    assert got == pytest.approx(expected, rel=1e-4)
    AutoModelForCausalLM.from_pretrained(out / "checkpoint-0000002")  # no `_orig_mod.` names
    assert set(checkpoint_weights(out / "checkpoint-0000002")) == set(
        checkpoint_weights(eager / "checkpoint-0000002")
    )


@pytest.mark.slow
@pytest.mark.threads(1)  # as each torchrun worker (OMP_NUM_THREADS=1): only the batch split differs
def test_two_process_ddp_matches_one_process(extended_lm_dir, shards, tmp_path):
    """torchrun, 2 CPU processes (gloo) x batch 1 read the same global batch as 1 process x batch 2."""
    pytest.importorskip("accelerate")
    import os
    import subprocess
    import sys
    from pathlib import Path

    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(tiny_cli_args("cpt", extended_lm_dir, shards, single)) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "train.cli",
           *tiny_cli_args("cpt", extended_lm_dir, shards, ddp, "--optim.batch-size", "1")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {r["step"]: r["loss"] for r in read_metrics(single)}
    assert {r["step"]: r["loss"] for r in read_metrics(ddp)} == pytest.approx(expected, rel=1e-5)
    assert (ddp / "checkpoint-0000004" / "sts_vocab.json").is_file()
