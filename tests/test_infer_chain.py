"""Text-first / translation-first s2st at inference: the answer is decoded in two constrained phases
(`sts.generation.chain`), so no text id enters the speech span and no speech id the text span."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor

from sts.generation.chain import chain_text_ids, generate_chain
from sts.generation.request import GenerationRequest, Sampling
from sts.generation.vllm_backend import vllm_sampling_kwargs
from sts.tasks import save_task_formats
from sts.testing import synthetic_utterance
from sts.vocab import SpeechVocab


class Adversary(LogitsProcessor):
    """Favours one text id and one speech id at every step, so that in each phase the model's first
    choice is of the wrong modality; its 4th and 8th calls (batch 1: the end of each phase after 3
    ids) favour the phase's end as well."""

    def __init__(self, text_id: int, speech_id: int, ends: list[int]):
        self.text_id, self.speech_id, self.ends, self.calls = text_id, speech_id, ends, 0

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, [self.text_id, self.speech_id]] += 50.0
        if self.calls % 4 == 3:
            scores[:, self.ends] += 100.0
        self.calls += 1
        return scores


@pytest.fixture(scope="module")
def chain_checkpoint(extended_lm_dir, tmp_path_factory):
    from sts.testing import save_tiny_xcodec2

    root = tmp_path_factory.mktemp("chain")
    codec_dir = save_tiny_xcodec2(root / "codec")
    out = root / "ckpt"
    shutil.copytree(extended_lm_dir, out)
    vocab = SpeechVocab.load(out)
    dataclasses.replace(vocab, codec=str(codec_dir)).save(out)
    return out


@pytest.mark.parametrize("s2st_format", ["text-first", "translation-first"])
def test_chain_answer_keeps_each_modality_in_its_span(chain_checkpoint, extended_tokenizer, s2st_format):
    from infer import Request, Translator
    from infer.translate import replace_sampling

    save_task_formats(chain_checkpoint, s2st_format)
    tr = Translator.from_checkpoint(chain_checkpoint)
    assert tr.formatter.s2st_format == s2st_format  # read from sts_tasks.json
    tr.sampling = {t: replace_sampling(s, do_sample=False) for t, s in tr.sampling.items()}
    vocab = tr.vocab
    newline = extended_tokenizer("\n", add_special_tokens=False).input_ids[-1]
    text_id = int(chain_text_ids(vocab, extended_tokenizer)[5])
    speech_id = vocab.speech_token_offset + 7
    ends = [vocab.speech_start_id, vocab.speech_end_id]
    tr.extra_logits_processors = [Adversary(text_id, speech_id, ends)]
    seen = []
    generate = tr.backend.generate

    def spy(prompts, request):
        out = generate(prompts, request)
        seen.append((request, out))
        return out

    tr.backend.generate = spy
    [result] = tr.run([Request("s2st", "ja", "en", wav=synthetic_utterance(0.8, 150.0, seed=3), id="x")])
    (text_request, text_out), (speech_request, speech_out) = seen
    # the phases' constraints never overlap, and each output holds only its own modality
    assert not vocab.is_speech_id(text_request.allowed).any()
    assert vocab.is_speech_id(speech_request.allowed[speech_request.allowed != vocab.speech_end_id]).all()
    assert text_request.end_ids == [vocab.speech_start_id] and speech_request.end_ids == [vocab.speech_end_id]
    np.testing.assert_array_equal(text_out[0], [text_id] * 3 + [vocab.speech_start_id])
    np.testing.assert_array_equal(speech_out[0], [speech_id] * 3 + [vocab.speech_end_id])
    np.testing.assert_array_equal(result.codes[0], [7, 7, 7])
    assert result.finished and result.waveform is not None and len(result.waveform) == 3 * 320
    expected = extended_tokenizer.decode([text_id] * 3).strip()
    assert text_id != newline  # one line: text-first reads it as the transcript, with no translation
    row = result.summary()
    if s2st_format == "text-first":
        assert (result.transcript, result.translation) == (expected, None)
        assert row["transcript"] == expected and "translation" not in row
    else:
        assert (result.transcript, result.translation) == (None, expected)
        assert row["translation"] == expected and "transcript" not in row


def test_a_row_that_never_reaches_its_speech_has_none():
    class Backend:
        def __init__(self):
            self.calls = []

        def generate(self, prompts, request):
            self.calls.append((prompts, request))
            if len(self.calls) == 1:  # the text phase: row 0 switches, row 1 runs into its budget
                return [np.array([5, 6, 99]), np.array([5, 5, 5, 5])]
            return [np.array([1000, 1001, 2000])]

    backend = Backend()
    text = GenerationRequest(np.array([5, 6, 99]), [99], [8, 4], sampling=Sampling(do_sample=False))
    speech = GenerationRequest(np.array([1000, 1001, 2000]), [2000], [30, 40])
    rows = generate_chain(backend, [np.array([1, 2]), np.array([3])], text, speech)
    assert [r.switched for r in rows] == [True, False]
    np.testing.assert_array_equal(rows[0].ids(99), [5, 6, 99, 1000, 1001, 2000])
    assert len(rows[1].speech_ids) == 0
    prompts, second = backend.calls[1]
    np.testing.assert_array_equal(prompts[0], [1, 2, 5, 6, 99])  # prompt + text + the marker
    assert second.max_new_tokens == [30]  # the switching row's own speech budget
    with pytest.raises(ValueError, match="share allowed ids"):
        generate_chain(backend, [np.array([1])], text, GenerationRequest(np.array([5, 2000]), [2000], [3]))


def test_vllm_requests_of_both_phases(speech_vocab, extended_tokenizer):
    """vLLM takes the same two phases as plain requests: allowed ids and a stop id each."""
    text_ids = chain_text_ids(speech_vocab, extended_tokenizer)
    assert speech_vocab.speech_start_id in text_ids and extended_tokenizer.eos_token_id not in text_ids
    text = GenerationRequest(
        text_ids, [speech_vocab.speech_start_id], [20], sampling=Sampling(do_sample=False)
    )
    [kwargs] = vllm_sampling_kwargs(text)
    assert kwargs["stop_token_ids"] == [speech_vocab.speech_start_id]
    assert not speech_vocab.is_speech_id(np.array(kwargs["allowed_token_ids"])).any()
    assert torch.tensor(kwargs["allowed_token_ids"]).max() < speech_vocab.text_vocab_size or (
        max(kwargs["allowed_token_ids"]) == speech_vocab.speech_start_id
    )


def test_sts_eval_scores_the_chain_texts(chain_checkpoint, extended_tokenizer, tmp_path):
    """sts-eval scores a translation-first answer's translation as text, beside its speech."""
    from infer import Translator
    from infer.checkpoint_eval import EvalItem, evaluate_task
    from infer.translate import replace_sampling
    from sts.audio import write_audio

    save_task_formats(chain_checkpoint, "translation-first")
    tr = Translator.from_checkpoint(chain_checkpoint)
    tr.sampling = {t: replace_sampling(s, do_sample=False) for t, s in tr.sampling.items()}
    text_id = int(chain_text_ids(tr.vocab, extended_tokenizer)[5])
    tr.extra_logits_processors = [
        Adversary(
            text_id, tr.vocab.speech_token_offset + 7, [tr.vocab.speech_start_id, tr.vocab.speech_end_id]
        )
    ]
    written = extended_tokenizer.decode([text_id] * 3).strip()
    write_audio(tmp_path / "a.wav", synthetic_utterance(0.8, 150.0, seed=3))
    item = EvalItem("a", "ja", "en", audio=tmp_path / "a.wav", src_text="駅", tgt_text=written)
    summary, [row] = evaluate_task(tr, [item], "s2st", asr=None)
    assert row["translation"] == written
    chrf = summary["chain"]["translation"]["to_en"]["chrf++"]
    assert (
        chrf["score"] == pytest.approx(100.0)
        and "raw text" in summary["chain"]["translation"]["to_en"]["protocol"]
    )


def test_guidance_scale_one_leaves_a_chain_answer_unchanged_and_three_guides_its_speech(
    chain_checkpoint, extended_tokenizer
):
    """Classifier-free guidance on a text-first answer's speech phase: scale 1 is plain decoding; with
    scale 3 the speech request carries the speech-phase prompt without the source speech."""
    from infer import Request, Translator
    from infer.translate import replace_sampling

    save_task_formats(chain_checkpoint, "text-first")
    wav = synthetic_utterance(0.8, 150.0, seed=3)
    outputs = {}
    for scale in (1.0, 3.0):
        tr = Translator.from_checkpoint(chain_checkpoint, guidance_scale=scale, max_new_tokens=6)
        tr.sampling = {t: replace_sampling(s, do_sample=False) for t, s in tr.sampling.items()}
        text_id = int(chain_text_ids(tr.vocab, extended_tokenizer)[5])
        ends = [tr.vocab.speech_start_id, tr.vocab.speech_end_id]
        tr.extra_logits_processors = [Adversary(text_id, tr.vocab.speech_token_offset + 7, ends)]
        seen = []
        generate = tr.backend.generate
        tr.backend.generate = lambda prompts, request, g=generate, seen=seen: (
            seen.append(request) or g(prompts, request)
        )
        [result] = tr.run([Request("s2st", "ja", "en", wav=wav, id="x")])
        outputs[scale] = (result, seen)
    assert all(not r.guided for r in outputs[1.0][1])
    [speech] = [r for r in outputs[3.0][1] if r.guided]  # the speech phase only; the text phase is not
    [uncond] = speech.unconditional_prompts
    assert not tr.vocab.is_speech_id(uncond).any()  # the source speech's codes are gone
    assert uncond[-1] == tr.vocab.speech_start_id  # ... and it still ends where the speech starts
    np.testing.assert_array_equal(outputs[1.0][0].codes[0], [7, 7, 7])  # the adversary's speech
