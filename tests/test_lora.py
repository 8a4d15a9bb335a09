"""LoRA right after `sts-extend-tokenizer`: the speech rows train (PEFT trainable tokens), merge-lora writes
them into LFM2's tied embedding/head, and the merged text-first model decodes exactly as the adapter does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sts.model_files import DECODING_FILES
from sts.testing.numerics import assert_close_rounding, rounding_tolerance
from sts.vocab import SpeechVocab
from train.checkpoint import latest_checkpoint
from train.cli import main
from train.testing import tiny_cli_args

pytest.importorskip("peft")

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


@pytest.fixture(scope="module")
def lora_run(extended_lm_dir, shards, tmp_path_factory):
    """A text-first LoRA sft run (4 steps) straight from the fresh extension, and its merge."""
    root = tmp_path_factory.mktemp("lora")
    extra = ("--lora.r", "4", "--eval.every", "0", "--sft.s2st-format", "text-first")
    assert main(tiny_cli_args("sft", extended_lm_dir, shards, root / "run", *extra)) == 0
    checkpoint = latest_checkpoint(root / "run")
    assert main(["merge-lora", str(checkpoint), "-o", str(root / "merged")]) == 0
    return checkpoint, root / "merged"


def speech_stats(lm, vocab: SpeechVocab) -> tuple[int, float]:
    """(distinct speech rows of the input embedding, max - min of the speech logits after a fixed
    prompt that ends in speech tokens)."""
    rows = lm.get_input_embeddings().weight[vocab.speech_token_offset : vocab.speech_token_stop]
    prompt = torch.tensor([[1, 5, 6, 7, vocab.speech_start_id, vocab.speech_token_offset + 3]])
    with torch.no_grad():
        logits = lm(prompt).logits[0, -1, vocab.speech_token_offset : vocab.speech_token_stop]
    return torch.unique(rows, dim=0).shape[0], float(logits.max() - logits.min())


def test_speech_rows_train_under_lora_and_merge_into_the_tied_matrix(lora_run, extended_lm_dir, speech_vocab):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from train.lora import new_token_ids

    checkpoint, merged = lora_run
    fresh = AutoModelForCausalLM.from_pretrained(extended_lm_dir).eval()
    assert speech_stats(fresh, speech_vocab) == (1, 0.0)  # one mean vector: every speech logit equal
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    assert config["trainable_token_indices"] == new_token_ids(speech_vocab)

    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(extended_lm_dir), checkpoint)
    trained = adapted.base_model.model.get_input_embeddings().token_adapter.trainable_tokens_delta["default"]
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    embedding, head = plain.get_input_embeddings().weight, plain.get_output_embeddings().weight
    assert head.data_ptr() == embedding.data_ptr()  # still one matrix after merge and reload
    ids = new_token_ids(speech_vocab)
    assert torch.equal(embedding[ids].detach(), trained.detach())  # the trained rows, copied exactly
    assert not torch.equal(embedding[ids], fresh.get_input_embeddings().weight[ids])
    others = [i for i in range(speech_vocab.vocab_size) if i not in set(ids)]
    assert torch.equal(embedding[others], fresh.get_input_embeddings().weight[others])  # text rows frozen

    distinct, spread = speech_stats(plain, speech_vocab)
    # Measured on this data (docs/training.md): 219 distinct of 1,024 rows, spread 0.243. The rows of
    # codes the 4 steps saw move apart; the rest move together, as one more row.
    assert distinct > 100
    # Rounding alone moves a logit of magnitude ~1 by at most ~hidden * eps (64 * 1.2e-7 = 7.6e-6);
    # identical rows give exactly 0. Ask for 100 times that bound.
    assert spread > 100 * plain.config.hidden_size * FLOAT32_EPS


def test_frozen_speech_rows_are_refused_on_an_untrained_extension(extended_lm_dir, shards, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from sts.config import ConfigError
    from train.config import LoraArgs
    from train.lora import add_lora, stored_speech_rows_untrained, untrained_speech_rows

    args = tiny_cli_args("sft", extended_lm_dir, shards, tmp_path / "run", "--lora.r", "4",
                         "--lora.no-train-speech-rows", "--eval.every", "0")  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sts-train sft: error: lora.train_speech_rows is off, but the 1024 speech rows")
    assert "--lora.r 0" in err
    assert (
        not list((tmp_path / "run").glob("checkpoint-*")) and not (tmp_path / "run" / "token_cache").exists()
    )

    vocab = SpeechVocab.load(extended_lm_dir)
    lm = AutoModelForCausalLM.from_pretrained(extended_lm_dir)
    assert untrained_speech_rows(lm, vocab) and stored_speech_rows_untrained(extended_lm_dir, vocab)
    with pytest.raises(ConfigError, match="lora.train_speech_rows is off"):  # the loaded model too
        add_lora(lm, LoraArgs(r=4, train_speech_rows=False), vocab)
    with torch.no_grad():
        lm.get_input_embeddings().weight[vocab.speech_token_offset + 5, 0] += 1e-3  # one row trained
    assert not untrained_speech_rows(lm, vocab)
    peft_model = add_lora(lm, LoraArgs(r=4, train_speech_rows=False), vocab)  # allowed now: adapters only
    assert not any("token_adapter" in n for n, p in peft_model.named_parameters() if p.requires_grad)


def test_merged_text_first_model_decodes_as_the_adapter(lora_run, extended_lm_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from infer.decoding import LengthBudget
    from infer.translate import Request, Translator, replace_sampling
    from sts.codec import load_codec
    from sts.decoding_info import read_decoding_info
    from sts.generation.transformers_backend import TransformersBackend
    from sts.tasks import load_task_formats
    from sts.testing import save_tiny_xcodec2, synthetic_utterance

    checkpoint, merged = lora_run
    for name in DECODING_FILES:  # every file that says how to decode, carried over unchanged
        assert (merged / name).is_file(), name
    assert SpeechVocab.load(merged) == SpeechVocab.load(checkpoint)
    for name in ("sts_tasks.json", "sts_decoding.json"):
        assert json.loads((merged / name).read_text()) == json.loads((checkpoint / name).read_text())
    assert load_task_formats(merged)["s2st"] == "text-first"

    codec = str(save_tiny_xcodec2(tmp_path / "codec"))
    merged_tr = Translator.from_checkpoint(merged, codec=codec, max_new_tokens=48)
    # The adapter folder as peft reads it (Translator.from_checkpoint takes plain folders only).
    lm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(extended_lm_dir), checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    adapter_tr = Translator(
        tokenizer, SpeechVocab.load(checkpoint), TransformersBackend(lm, pad_token_id=tokenizer.pad_token_id),
        load_codec(codec), max_new_tokens=48, s2st_format=load_task_formats(checkpoint)["s2st"],
        length_budget=LengthBudget(duration_ratio=read_decoding_info(checkpoint)["duration_ratio"]),
    )  # fmt: skip
    outputs = {}
    for name, tr in (("merged", merged_tr), ("adapter", adapter_tr)):
        assert tr.formatter.s2st_format == "text-first"
        tr.sampling = {t: replace_sampling(s, do_sample=False) for t, s in tr.sampling.items()}
        seen = []
        generate = tr.backend.generate
        tr.backend.generate = lambda prompts, request, seen=seen, generate=generate: (
            seen.append((prompts, generate(prompts, request))) or seen[-1][1]
        )
        wav = synthetic_utterance(0.8, 150.0, seed=3)
        results = tr.run(
            [Request("s2st", "ja", "en", wav=wav, id="a"), Request("tts", "en", "en", text="Hi.")]
        )
        outputs[name] = (seen, [r.summary() for r in results])
    (merged_seen, merged_rows), (adapter_seen, adapter_rows) = outputs["merged"], outputs["adapter"]
    assert len(merged_seen) == len(adapter_seen) >= 2  # s2st text-first: a text phase, then speech
    assert sum(len(o) for _, out in merged_seen for o in out) > 20
    # Merged W + BA and unmerged W x + B(A x) round differently, so greedy tokens may part where two
    # logits nearly tie (random tiny models give small margins). Teacher-forced on the merged
    # model's tokens, the two models' step logits must agree within the float32 rounding tolerance;
    # the tokens must agree up to the first near tie, and where they part the merged model's margin
    # between the two picks must be within 4 tolerances (generated vs teacher-forced logits of each
    # model, and merged vs adapter: four roundings of one value between the two picks' ordering).
    cfg = merged_tr.backend.model.config
    n = cfg.num_hidden_layers * (cfg.hidden_size + cfg.intermediate_size) + cfg.hidden_size
    parted = False
    for (prompts_m, out_m), (prompts_a, out_a) in zip(merged_seen, adapter_seen, strict=True):
        assert len(prompts_m) == len(prompts_a) == len(out_m) == len(out_a)
        for prompt_m, prompt_a, ids_m, ids_a in zip(prompts_m, prompts_a, out_m, out_a, strict=True):
            np.testing.assert_array_equal(prompt_m, prompt_a)  # same format and vocabulary
            ids = torch.as_tensor(np.concatenate([prompt_m, ids_m]), dtype=torch.long)[None]
            with torch.no_grad():
                steps = slice(len(prompt_m) - 1, ids.shape[1] - 1)  # the logits that picked ids_m
                logits_m = merged_tr.backend.model(ids).logits[0, steps]
                logits_a = lm(ids).logits[0, steps]
            assert_close_rounding(logits_a, logits_m, reduction_size=n, msg="step logits")
            common = next((k for k, (a, b) in enumerate(zip(ids_m, ids_a, strict=False)) if a != b), None)
            if common is None:
                assert len(ids_m) == len(ids_a)  # same tokens; an end id or a budget ends both
                continue
            margin = float(logits_m[common, ids_m[common]] - logits_m[common, ids_a[common]])
            tol = 2 * rounding_tolerance(torch.float32, n, float(logits_m[common].abs().max()))
            assert abs(margin) <= 4 * tol, f"tokens part at step {common} with margin {margin:.3g}"
            parted = True
        if parted:  # later phases start from other tokens: nothing more to compare
            break
    if not parted:
        for row in (*merged_rows, *adapter_rows):
            row.pop("seconds", None)
        assert merged_rows == adapter_rows
