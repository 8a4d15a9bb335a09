"""`sts-train dpo`: the loss equals hand-computed values (and TRL's), per-sequence log-probs match the full
logits, pairs load and batch as documented, and training resumes exactly, guards NaN and runs with LoRA
and a precomputed reference."""

from __future__ import annotations

import json
import math
import shutil
import types
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sts.config import make_config
from sts.tasks import IGNORE_INDEX, Example, TaskFormatter
from sts.testing.numerics import assert_close_rounding, rounding_tolerance
from train.cli import main
from train.config import CONFIG_DIR, TrainConfig
from train.dpo import REFERENCE_FILE, preference_loss, reference_key
from train.logger import read_metrics
from train.loss import CausalLMWithLoss, chunked_token_log_probs
from train.pair_data import PairError, PairSet, load_pairs, pair_batch, pair_index

# ---------------------------------------------------------------- the loss (done-when: hand-computed)

BATCH = dict(  # two pairs: summed answer log-probs under the policy and the reference, answer lengths
    policy_chosen=torch.tensor([-10.0, -20.0]),
    policy_rejected=torch.tensor([-12.0, -18.0]),
    ref_chosen=torch.tensor([-11.0, -19.0]),
    ref_rejected=torch.tensor([-11.0, -19.0]),
)
TOKENS = dict(chosen_tokens=torch.tensor([4, 2]), rejected_tokens=torch.tensor([5, 10]))


def test_sigmoid_loss_equals_the_hand_computed_value():
    # log-ratios: chosen (1, -1), rejected (-1, 1); margins (2, -2); beta 0.1
    losses, chosen_rewards, rejected_rewards = preference_loss(*BATCH.values(), beta=0.1)
    expected = [math.log1p(math.exp(-0.2)), math.log1p(math.exp(0.2))]  # -log sigmoid(+-0.2)
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    assert losses.tolist() == pytest.approx([0.5981388693, 0.7981388693], rel=1e-6)
    assert chosen_rewards.tolist() == pytest.approx(
        [0.1, -0.1]
    ) and rejected_rewards.tolist() == pytest.approx([-0.1, 0.1])


def test_ipo_loss_equals_the_hand_computed_value():
    # per-token log-ratio differences: 1/4 + 1/5 = 0.45 and -1/2 - 1/10 = -0.6; target 1 / (2 * 0.1) = 5
    losses, _, _ = preference_loss(*BATCH.values(), beta=0.1, kind="ipo", **TOKENS)
    assert losses.tolist() == pytest.approx([(0.45 - 5) ** 2, (-0.6 - 5) ** 2], rel=1e-6)
    with pytest.raises(ValueError, match="token counts"):
        preference_loss(*BATCH.values(), beta=0.1, kind="ipo")
    with pytest.raises(ValueError, match="unknown preference loss"):
        preference_loss(*BATCH.values(), beta=0.1, kind="kto")


@pytest.mark.slow  # importing TRL takes ~8 s
@pytest.mark.parametrize("kind", ["sigmoid", "ipo"])
def test_loss_matches_trl_on_a_fixed_batch(kind):
    """TRL computes its DPO losses inside `DPOTrainer._compute_loss`; run it on a stand-in trainer whose
    model returns fixed per-token log-probs (precomputed reference), and compare."""
    trl = pytest.importorskip("trl")
    from trl.trainer.dpo_trainer import DPOTrainer

    rows, width = 4, 6  # [chosen 1, chosen 2, rejected 1, rejected 2], completion = the last n tokens
    lengths = [4, 2, 5, 5]
    completion = torch.zeros(rows, width, dtype=torch.long)
    for r, n in enumerate(lengths):
        completion[r, width - n :] = 1
    sums = torch.cat([BATCH["policy_chosen"], BATCH["policy_rejected"]])
    per_token = torch.zeros(rows, width - 1)
    for r in range(rows):  # spread each row's sum over its completion tokens (shifted by one)
        mask = completion[r, 1:].bool()
        per_token[r, mask] = sums[r] / mask.sum()
    outputs = types.SimpleNamespace(log_probs=per_token, entropy=torch.zeros(rows, width - 1),
                                    mean_logits=torch.zeros(rows, width - 1),
                                    is_top1=torch.zeros(rows, width - 1, dtype=torch.bool))  # fmt: skip
    model = types.SimpleNamespace(training=True)
    accelerator = types.SimpleNamespace(
        device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x
    )
    trainer = types.SimpleNamespace(model=model, accelerator=accelerator, aux_loss_enabled=False, ld_alpha=None,
                                    precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[kind],
                                    loss_weights=[1.0], beta=0.1, label_smoothing=0.0, use_weighting=False,
                                    _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0,
                                    _tp_size=1)  # fmt: skip
    inputs = {"input_ids": torch.ones(rows, width, dtype=torch.long), "attention_mask": torch.ones(rows, width),
              "completion_mask": completion, "ref_chosen_logps": BATCH["ref_chosen"],
              "ref_rejected_logps": BATCH["ref_rejected"]}  # fmt: skip
    try:
        trl_loss = DPOTrainer._compute_loss(trainer, lambda **kw: outputs, inputs, False)
    except (AttributeError, TypeError, KeyError) as err:  # TRL's private API moved
        pytest.skip(f"TRL {trl.__version__}: DPOTrainer._compute_loss has another form ({err})")
    ours, chosen_rewards, _ = preference_loss(*BATCH.values(), beta=0.1, kind=kind,
                                              chosen_tokens=torch.tensor(lengths[:2]),
                                              rejected_tokens=torch.tensor(lengths[2:]))  # fmt: skip
    assert float(trl_loss) == pytest.approx(float(ours.mean()), rel=1e-6)
    assert trainer._metrics["train"]["rewards/chosen"][0] == pytest.approx(
        float(chosen_rewards.mean()), abs=1e-6
    )


# ---------------------------------------------------------------- per-sequence log-probs without full logits


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_token_log_probs_match_log_softmax(chunk):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(23, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(31, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 31, (23,), generator=g)
    labels[::4] = IGNORE_INDEX
    upstream = torch.randn(23, generator=g, dtype=torch.float64)
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp = torch.log_softmax(h1 @ w1.T, -1).gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    ref = torch.where(labels != IGNORE_INDEX, logp, torch.zeros_like(logp))
    got = chunked_token_log_probs(h2, w2, labels, chunk_tokens=chunk)
    (ref.float() * upstream).sum().backward()
    (got * upstream).sum().backward()  # a different upstream gradient per token
    assert got.dtype == torch.float32 and got.shape == (23,) and (got[::4] == 0).all()
    # float64 matmuls, but float32 log-probs and upstream gradient: float32 over hidden + vocab + tokens
    n = hidden.shape[1] + weight.shape[0] + hidden.shape[0]
    assert_close_rounding(got, ref, reduction_size=n, dtype=torch.float32)
    assert_close_rounding(h2.grad, h1.grad, reduction_size=n, dtype=torch.float32)
    assert_close_rounding(w2.grad, w1.grad, reduction_size=n, dtype=torch.float32)


def test_model_wrapper_sequence_log_probs_match_naive(extended_lm_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_pretrained(extended_lm_dir, dtype=torch.float32)
    ids = torch.randint(0, lm.config.vocab_size, (3, 17))
    labels = ids.clone()
    labels[:, :6] = IGNORE_INDEX
    labels[2, 12:] = IGNORE_INDEX  # right padding
    got = {}
    for impl in ("naive", "chunked"):
        lm.zero_grad()
        logps, n = CausalLMWithLoss(lm, impl=impl, chunk_tokens=5)(ids, labels, per_sequence=True)
        (logps * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
        got[impl] = (logps.detach(), n, lm.get_output_embeddings().weight.grad.clone())
    assert got["chunked"][1].tolist() == [11, 11, 6]
    # Both paths round in float32, in another order: a matmul over the hidden width, a log-softmax over
    # the vocabulary, sums over the tokens. The weight gradient's magnitude (max|grad|, ~100 here: the
    # tied embeddings' gradient is amplified by the RMSNorms' 1 / rms) carries that amplification.
    n = lm.config.hidden_size + lm.config.vocab_size + ids.numel()
    assert_close_rounding(got["chunked"][0], got["naive"][0], reduction_size=n, msg="log-probs")
    assert_close_rounding(got["chunked"][2], got["naive"][2], reduction_size=n, msg="output weight gradient")


# ---------------------------------------------------------------- pairs: loading, order, batches


def _token_pairs(path, vocab, n=6, seed=0):
    """Random token pairs in the `dpo-pairs` layout: a text prompt, speech answers."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        prompt = np.concatenate([rng.integers(20, 300, 6), [vocab.speech_start_id]])
        answers = [np.concatenate([vocab.codes_to_ids(rng.integers(0, 64, rng.integers(4, 12))), [vocab.speech_end_id]])
                   for _ in range(2)]  # fmt: skip
        rows.append({"id": f"p{i}", "prompt_ids": prompt.astype(np.int32).tolist(),
                     "chosen_ids": answers[0].astype(np.int32).tolist(), "rejected_ids": answers[1].astype(np.int32).tolist()})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_pair_batch_puts_chosen_rows_first_and_labels_the_answers_only():
    pairs = PairSet()
    pairs.add("a", [1, 2, 3], [4, 5], [6], seq_len=10)
    pairs.add("b", [1, 2], [7], [8, 9, 9], seq_len=10)
    pairs.add("c", [1], [2], [2], seq_len=10)  # identical answers: skipped
    pairs.add("d", [1] * 8, [2, 3, 4], [5], seq_len=10)  # too long
    assert pairs.counts == {"kept": 2, "skipped_identical": 1, "dropped_overlong": 1}
    batch = pair_batch(pairs, [1, 0], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 7, 0, 0], [1, 2, 3, 4, 5], [1, 2, 8, 9, 9], [1, 2, 3, 6, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 7, -100, -100], [-100, -100, -100, 4, 5],
                                        [-100, -100, 8, 9, 9], [-100, -100, -100, 6, -100]]  # fmt: skip
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4] and batch["index"].tolist() == [1, 0]


def test_pair_order_is_an_epoch_permutation():
    drawn = [pair_index(k, 5, seed=3) for k in range(10)]
    assert sorted(drawn[:5]) == sorted(drawn[5:]) == [0, 1, 2, 3, 4]
    assert drawn == [pair_index(k, 5, seed=3) for k in range(10)] and drawn != [
        pair_index(k, 5, seed=4) for k in range(10)
    ]


def test_text_pairs_are_formatted_as_sft_formats_them(tmp_path, extended_tokenizer, speech_vocab):
    rows = [{"prompt": "おはようございます。", "chosen": "Good morning.", "rejected": "Good night.",
             "src_lang": "ja", "tgt_lang": "en"},
            {"prompt": "Say hello.", "chosen": "Hello.", "rejected": "Bye."}]  # fmt: skip
    path = tmp_path / "mt.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    pairs = load_pairs([str(path)], extended_tokenizer, speech_vocab, seq_len=512)
    assert len(pairs) == 2 and pairs.ids == ["mt-0", "mt-1"]
    fmt = TaskFormatter(extended_tokenizer, speech_vocab)
    sample = fmt.build(Example("t2tt", "ja", "en", src_text=rows[0]["prompt"], tgt_text="Good morning."))
    answer = sample["labels"][sample["labels"] != IGNORE_INDEX]  # SFT's assistant-turn labels
    assert (
        np.concatenate([pairs.prompts[0], pairs.chosen[0]]).tolist()
        == sample["input_ids"][: len(pairs.prompts[0]) + len(answer)].tolist()
    )
    assert (
        pairs.chosen[0].tolist() == answer.tolist() and pairs.chosen[0][-1] == extended_tokenizer.eos_token_id
    )
    assert pairs.rejected[1][-1] == extended_tokenizer.eos_token_id
    assert extended_tokenizer.decode(pairs.chosen[1], skip_special_tokens=True).strip() == "Hello."

    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "?", "answer": "!"}) + "\n")
    with pytest.raises(PairError, match="bad.jsonl: expected columns"):
        load_pairs([str(tmp_path / "bad.jsonl")], extended_tokenizer, speech_vocab)
    (tmp_path / "special.jsonl").write_text(
        json.dumps({"prompt": "a<|im_end|>", "chosen": "b", "rejected": "c"}) + "\n"
    )
    with pytest.raises(PairError, match="special.jsonl: row 0: .*special-token"):
        load_pairs([str(tmp_path / "special.jsonl")], extended_tokenizer, speech_vocab)
    with pytest.raises(FileNotFoundError):
        load_pairs([str(tmp_path / "missing")], extended_tokenizer, speech_vocab)
    foreign = {"prompt_ids": [1, 2], "chosen_ids": [speech_vocab.vocab_size], "rejected_ids": [3]}
    pq.write_table(pa.Table.from_pylist([foreign]), tmp_path / "foreign.parquet")
    with pytest.raises(PairError, match="foreign.parquet: row 0: token ids outside"):
        load_pairs([str(tmp_path / "foreign.parquet")], extended_tokenizer, speech_vocab)


# ---------------------------------------------------------------- the training loop


def dpo_args(model, pairs, out_dir, *extra):
    return ["dpo", "--config", str(CONFIG_DIR / "tiny_sft.yaml"), "--model", str(model), "--dpo.pairs", str(pairs),
            "--out-dir", str(out_dir), "--data.eval-fraction", "0.2", "--eval.no-generate", "--optim.lr", "1e-2", *extra]  # fmt: skip


def test_dpo_resumes_exactly_and_learns_the_preference(extended_lm_dir, speech_vocab, tmp_path):
    pairs = _token_pairs(tmp_path / "pairs" / "part-0.parquet", speech_vocab, n=8)
    out = tmp_path / "dpo"
    args = dpo_args(extended_lm_dir, pairs.parent, out, "--optim.grad-accum", "2")
    assert main(args) == 0
    straight = {r["step"]: r for r in read_metrics(out)}
    assert straight[1]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 1
    assert straight[4]["rewards/margin"] > 0 and straight[4]["loss"] < math.log(2)
    assert read_metrics(out, kind="eval")[-1]["pairs/loss"] > 0
    ckpt = out / "checkpoint-0000004"
    assert json.loads((ckpt / "trainer_state.json").read_text())["pairs_consumed"] == 4 * 2 * 2
    assert json.loads((ckpt / "sts_tasks.json").read_text())["s2st"] == "direct"

    shutil.rmtree(ckpt)
    (out / "metrics.jsonl").unlink()
    assert main(args) == 0  # resumes at step 2: the same next losses
    resumed = {r["step"]: r["loss"] for r in read_metrics(out)}
    assert resumed == pytest.approx({3: straight[3]["loss"], 4: straight[4]["loss"]}, rel=1e-6, abs=1e-7)


def step_one_bound(config, largest: float, beta: float) -> float:
    """|step-1 loss - log 2| when the reference table was computed in other batches (index order, other
    padding): the four summed answer log-probs (magnitude <= `largest`) of a pair's margin m each round
    otherwise on both sides (float32 over hidden + vocab + tokens; rows are at most 7 + 12 tokens), so
    |m| <= 4 tolerance, and -log sigmoid(beta m) moves from log 2 by at most beta |m| / 2 (its slope at 0)."""
    n = config.hidden_size + config.vocab_size + 32
    return 2 * beta * rounding_tolerance(torch.float32, n, largest)


@pytest.mark.parametrize(
    "extra", [["--dpo.reference", "precomputed"], ["--lora.r", "4", "--lora.targets", "q_proj", "v_proj"]]
)
def test_reference_options_train(extended_lm_dir, speech_vocab, tmp_path, extra):
    pairs = _token_pairs(tmp_path / "pairs.parquet", speech_vocab)
    out = tmp_path / "dpo"
    assert main(dpo_args(extended_lm_dir, pairs, out, *extra)) == 0
    records = read_metrics(out)
    at_step_1 = 1e-5  # the reference is the same computation as the policy (adapters off: B = 0 adds 0)
    if "precomputed" in extra:
        with np.load(out / REFERENCE_FILE) as table:
            assert table["train_chosen"].shape[0] + table["eval_chosen"].shape[0] == 6
            largest = max(float(np.abs(table[k]).max()) for k in ("train_chosen", "train_rejected"))
        from transformers import AutoConfig

        at_step_1 = step_one_bound(AutoConfig.from_pretrained(extended_lm_dir), largest, beta=0.1)
    assert (
        records[0]["loss"] == pytest.approx(math.log(2), abs=at_step_1) and records[-1]["rewards/margin"] > 0
    )
    if "precomputed" in extra:
        shutil.rmtree(out / "checkpoint-0000004")
        (out / "metrics.jsonl").unlink()
        assert main(dpo_args(extended_lm_dir, pairs, out, *extra)) == 0  # the table is read back on resume
        assert read_metrics(out)[-1]["loss"] == pytest.approx(records[-1]["loss"], rel=1e-6)
        for gone in (out / REFERENCE_FILE, out / "checkpoint-0000004", out / "metrics.jsonl"):
            shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
        assert (
            main(dpo_args(extended_lm_dir, pairs, out, *extra)) == 0
        )  # the moved policy is not the reference:
        assert read_metrics(out)[-1]["loss"] == pytest.approx(
            records[-1]["loss"], rel=1e-5
        )  # from a frozen copy


def test_non_finite_steps_are_skipped_then_stop(extended_lm_dir, speech_vocab, tmp_path, monkeypatch, capsys):
    import train.dpo as dpo

    pairs = _token_pairs(tmp_path / "pairs.parquet", speech_vocab)
    real = dpo.compute_logps
    monkeypatch.setattr(dpo, "compute_logps", lambda m, b: (real(m, b)[0] * float("nan"), real(m, b)[1]))
    assert main(dpo_args(extended_lm_dir, pairs, tmp_path / "dpo", "--optim.max-bad-steps", "2")) == 1
    assert "2 consecutive non-finite steps" in capsys.readouterr().err
    assert [r.get("skipped") for r in read_metrics(tmp_path / "dpo")] == ["non-finite loss or gradient"] * 2


def test_dpo_cli_errors_are_one_line(extended_lm_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(dpo_args(extended_lm_dir, tmp_path / "empty", tmp_path / "dpo")) == 2
    assert "no pair files" in capsys.readouterr().err
    assert (
        main(
            [
                *dpo_args(extended_lm_dir, tmp_path / "empty", tmp_path / "dpo"),
                "--export-axolotl",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    with pytest.raises(ValueError, match="dpo.beta must be > 0"):
        make_config(TrainConfig, stage="dpo", dpo__beta=0.0)
    from train.trainer import train

    with pytest.raises(ValueError, match="train_dpo"):  # the cpt/sft loop does not take pairs
        train(TrainConfig(stage="dpo", out_dir=tmp_path / "x"))


def test_precomputed_reference_belongs_to_the_model_content_not_its_path(
    extended_lm_dir, speech_vocab, tmp_path
):
    """Another model copied to the path a precomputed table was made from: the table is recomputed, so
    policy == reference at step 1 and the loss is log 2 (a stale table gives another value)."""
    from transformers import AutoModelForCausalLM

    from sts.model_files import model_fingerprint

    model, other = tmp_path / "model", tmp_path / "other"
    shutil.copytree(extended_lm_dir, model)
    shutil.copytree(extended_lm_dir, other)
    lm = AutoModelForCausalLM.from_pretrained(extended_lm_dir)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    lm.save_pretrained(other)  # B: the same vocabulary and tokenizer, other weights
    pairs = _token_pairs(tmp_path / "pairs.parquet", speech_vocab)
    out = tmp_path / "dpo"
    args = dpo_args(model, pairs, out, "--dpo.reference", "precomputed")
    assert main(args) == 0
    with np.load(out / REFERENCE_FILE) as table:
        first_key, first_chosen = json.loads(str(table["fingerprints"])), table["train_chosen"].copy()
    assert first_key["model"] == model_fingerprint(model, full=True)

    for gone in (*out.glob("checkpoint-*"), out / "metrics.jsonl"):  # a new run in the same folder
        shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
    shutil.rmtree(model)
    shutil.copytree(other, model)
    assert main(args) == 0
    with np.load(out / REFERENCE_FILE) as table:
        key, chosen, rejected = (
            json.loads(str(table["fingerprints"])),
            table["train_chosen"],
            table["train_rejected"],
        )
        assert key["model"] == model_fingerprint(other, full=True) != first_key["model"]
        beta = 0.1  # dpo.beta's default
        bound = step_one_bound(lm.config, float(np.abs([chosen, rejected]).max()), beta)
        stale = beta * np.abs(first_chosen - chosen).max()  # the scale a reused table would be off by
    assert stale > 100 * bound
    assert read_metrics(out)[0]["loss"] == pytest.approx(math.log(2), abs=bound)


def test_reference_key_hashes_every_byte_of_the_weights(tmp_path):
    """Two models whose 65 MiB safetensors differ in one byte between the 16 sampled blocks: the
    quick fingerprint cannot tell them apart, the reference key does."""
    from sts.model_files import model_fingerprint

    header = json.dumps({"w": {"dtype": "U8", "shape": [65 << 20], "data_offsets": [0, 65 << 20]}}).encode()
    data = bytearray(65 << 20)
    folders = []
    for name, byte in (("a", 0), ("b", 1)):
        data[(65 << 20) // 32] = byte  # mid-way between the first two sampled 64 KiB blocks
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + data)
        folders.append(folder)
    assert model_fingerprint(folders[0]) == model_fingerprint(folders[1])
    splits = {"train": PairSet()}
    assert reference_key(folders[0], splits)["model"] != reference_key(folders[1], splits)["model"]
    assert reference_key(folders[0], splits) == reference_key(folders[0], splits)
