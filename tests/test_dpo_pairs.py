"""`sts-train dpo-pairs`: the score rules, pair building deterministic for a seed, resumable, refused under
other settings, a card that adds up, speech scored through the codec/ASR/speaker path, and the pairs
read back by `sts-train dpo`."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

import train.pairs as pairs_module
from train.cli import main
from train.pair_data import load_pairs
from train.pair_scores import CandidateScore, Scoring, score_all, select_pairs
from train.pairs import PairConfig, PairsError, build_pairs


def config(model, shards, out, **overrides) -> PairConfig:
    fields = dict(model=str(model), shards=[str(s) for s in shards], out_dir=out, samples=3, max_prompts=10,
                  prompts_per_chunk=4, asr="none", speaker=False, max_new_tokens=128, seq_len=256, fast=False)  # fmt: skip
    return PairConfig(**{**fields, **overrides})


def tables(out) -> dict[str, list[dict]]:
    return {kind: [r for f in sorted((out / kind).glob("part-*.parquet")) for r in pq.read_table(f).to_pylist()]
            for kind in ("pairs", "scores")}  # fmt: skip


def same(a: list[dict], b: list[dict]) -> bool:
    """Row-wise equality with NaN == NaN."""

    def norm(row):
        return {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}

    return [norm(r) for r in a] == [norm(r) for r in b]


# ---------------------------------------------------------------- the score and the pair rules


def test_score_rules_and_pair_choice():
    scoring = Scoring()
    clean = CandidateScore("", True, 1.0, chrf=60.0, speaker_sim=0.8)
    looped = CandidateScore("exact", False, 2.1, chrf=10.0)
    short = CandidateScore("", True, 0.25, chrf=40.0)
    assert scoring.score(clean) == pytest.approx(0.6 + 0.25 * 0.8)
    # loop 1 + unfinished 0.5 + length 0.5 * (ln 2.1 - ln 1.5)
    assert scoring.score(looped) == pytest.approx(0.1 - 1.0 - 0.5 - 0.5 * (math.log(2.1) - math.log(1.5)))
    assert scoring.score(short) == pytest.approx(0.4 - 0.5 * (math.log(4) - math.log(1.5)))
    candidates = [short, looped, clean]
    score_all(candidates, scoring)
    assert select_pairs(candidates, scoring) == [(2, 1)]
    assert select_pairs(candidates, scoring, pairs_per_prompt=2) == [(2, 1), (2, 0)]
    assert select_pairs(candidates, scoring, same=lambda a, b: b == 1) == [(2, 0)]
    assert select_pairs([looped, looped], scoring) == []  # the best one loops: no pair
    assert select_pairs([clean, clean], scoring) == []  # no margin
    lenient = Scoring(require_clean_chosen=False)
    worse = CandidateScore("exact", False, 3.0)
    score_all([looped, worse], lenient)
    assert select_pairs([worse, looped], lenient) == [(1, 0)]


def test_an_answer_without_speaker_score_takes_the_term_out_of_its_prompt():
    scoring = Scoring(min_margin=0.0)
    voiced = CandidateScore("", True, 1.0, chrf=50.0, speaker_sim=0.9)
    truncated = CandidateScore("", True, 1.0, chrf=55.0, speaker_sim=None)  # too little voice: no score
    score_all([voiced, truncated], scoring)
    assert not voiced.speaker_counted and not truncated.speaker_counted
    assert voiced.score == pytest.approx(0.5) and truncated.score == pytest.approx(0.55)  # chrF++ alone
    assert select_pairs([voiced, truncated], scoring) == [(1, 0)]  # neither gains nor loses by the voice
    other = CandidateScore("", True, 1.0, chrf=55.0, speaker_sim=0.2)
    score_all([voiced, other], scoring)  # both scored: the term counts
    assert voiced.speaker_counted and other.speaker_counted
    assert voiced.score == pytest.approx(0.5 + 0.25 * 0.9) and other.score == pytest.approx(0.55 + 0.25 * 0.2)
    assert select_pairs([voiced, other], scoring) == [(0, 1)]


# ---------------------------------------------------------------- deterministic, resumable (done-when)


def test_pairs_are_deterministic_for_a_seed(extended_lm_dir, shards, tmp_path):
    small = dict(max_prompts=6, samples=2, scoring=Scoring(min_margin=0.0, require_clean_chosen=False))
    cards = [build_pairs(config(extended_lm_dir, shards, tmp_path / name, **small)) for name in ("a", "b")]
    first, second = tables(tmp_path / "a"), tables(tmp_path / "b")
    assert len(first["pairs"]) > 0 and len(first["scores"]) == 12
    assert same(first["scores"], second["scores"]) and same(first["pairs"], second["pairs"])
    assert cards[0]["distributions"] == cards[1]["distributions"]
    build_pairs(config(extended_lm_dir, shards, tmp_path / "c", seed=1, **small))
    assert not same(tables(tmp_path / "c")["scores"], first["scores"])  # another seed, other samples


def test_pairs_resume_where_they_stopped(extended_lm_dir, shards, tmp_path, monkeypatch):
    out = tmp_path / "pairs"
    card = build_pairs(config(extended_lm_dir, shards, out))
    whole = tables(out)
    assert card["prompts"] == 10 and len(list((out / "pairs").glob("part-*"))) == 3  # 4 + 4 + 2 prompts
    # interrupted in chunk 1 (its scores part written, not its pair part) before chunk 2
    (out / "pairs" / "part-00001.parquet").unlink()
    (out / "pairs" / "part-00002.parquet").unlink()
    (out / "scores" / "part-00002.parquet").unlink()
    (out / "pairs.json").unlink()
    sampled = []
    real = pairs_module._sample_chunk
    monkeypatch.setattr(
        pairs_module, "_sample_chunk", lambda cfg, k, *a: sampled.append(k) or real(cfg, k, *a)
    )
    again = build_pairs(config(extended_lm_dir, shards, out))
    assert sampled == [1, 2]
    resumed = tables(out)
    assert same(resumed["scores"], whole["scores"]) and same(resumed["pairs"], whole["pairs"])
    assert again["distributions"] == card["distributions"]
    with pytest.raises(PairsError, match=r"other settings \(differing: \['samples'\]"):
        build_pairs(config(extended_lm_dir, shards, out, samples=4))


def test_card_adds_up_and_pairs_feed_dpo(extended_lm_dir, shards, speech_vocab, extended_tokenizer, tmp_path):
    out = tmp_path / "pairs"
    card = build_pairs(config(extended_lm_dir, shards, out, samples=4, scoring=Scoring(min_margin=0.0)))
    rows = tables(out)
    assert (
        card["answers"] == len(rows["scores"]) == card["prompts"] * 4
        and card["pairs"] == len(rows["pairs"]) > 0
    )
    assert card["distributions"]["score"]["all"]["n"] == card["answers"]
    assert sum(card["distributions"]["score"]["all"]["hist"]["counts"]) == card["answers"]
    assert card["distributions"]["score"]["chosen"]["n"] == card["pairs"]
    assert {g.split(":")[0] for g in card["groups"]} <= {"s2st", "tts", "s2tt", "t2tt"}
    assert sum(g["answers"] for g in card["groups"].values()) == card["answers"]
    assert json.loads((out / "pairs.json").read_text()) == json.loads(json.dumps(card))
    for pair in rows["pairs"]:
        assert (
            pair["chosen_score"] >= pair["rejected_score"]
            and pair["chosen_loop"] == ""
            and pair["chosen_ended"]
        )
        assert pair["chosen_ids"] != pair["rejected_ids"]
        if pair["task"] in ("s2st", "tts"):  # an ended speech answer: end marker, then end of turn
            assert pair["chosen_ids"][-2:] == [speech_vocab.speech_end_id, extended_tokenizer.eos_token_id]
    loaded = load_pairs([str(out)], extended_tokenizer, speech_vocab, seq_len=256)
    assert loaded.ids == [p["id"] for p in rows["pairs"]]
    assert loaded.chosen[0].tolist() == rows["pairs"][0]["chosen_ids"]


class FakeSpeechScorer:
    """Codes -> a tone whose pitch is the first code; the 'transcript' is right for even first codes."""

    failed = False

    def waves(self, codes):
        t = np.arange(8000) / 16000
        return [np.sin(2 * np.pi * (100 + int(c[0])) * t).astype(np.float32) if len(c) else np.zeros(0, np.float32)
                for c in codes]  # fmt: skip

    def transcribe_waves(self, waves, lang):
        right = {"en": "Good morning.", "ja": "おはようございます。"}[lang]
        return [right if len(w) and int(round(w[100] * 1e4)) % 2 == 0 else "" for w in waves]


class FakeSpeaker:
    def embed(self, wave, sample_rate=16000):
        return np.array([1.0, float(np.abs(wave[:50]).mean())]) if len(wave) else None


def test_speech_answers_are_scored_by_asr_and_speaker(extended_lm_dir, shards, tmp_path):
    out = tmp_path / "pairs"
    cfg = config(extended_lm_dir, shards, out, tasks=["s2st", "tts"], asr="auto", speaker=True, max_prompts=6)
    card = build_pairs(cfg, speech_scorer=FakeSpeechScorer(), speaker=FakeSpeaker())
    scores = tables(out)["scores"]
    assert all(0.0 <= r["chrf"] <= 100.0 for r in scores)  # every speech answer has an ASR-chrF++
    assert max(r["chrf"] for r in scores) > 50 and min(r["chrf"] for r in scores) == 0.0
    sims = [r["speaker_sim"] for r in scores]
    assert all(s is None or -1.0 <= s <= 1.0 for s in sims) and not any(s != s for s in sims if s is not None)
    assert card["distributions"]["speaker_sim"]["n"] > 0 and card["speaker_encoder"].startswith("resemblyzer")
    unscored = sum(g["speaker_unscored"] for g in card["groups"].values())
    assert unscored == sum(s is None for s in sims)  # null where the speaker gave no embedding
    counted = {r["prompt_id"]: r["speaker_counted"] for r in scores}  # one value per prompt
    assert all(counted[r["prompt_id"]] == r["speaker_counted"] for r in scores)


def test_cli_writes_pairs_and_reports_errors_in_one_line(extended_lm_dir, shards, tmp_path, capsys):
    args = ["dpo-pairs", "--model", str(extended_lm_dir), "--shards", *map(str, shards), "--out-dir",
            str(tmp_path / "pairs"), "--samples", "2", "--max-prompts", "3", "--asr", "none", "--no-speaker",
            "--max-new-tokens", "128", "--seq-len", "256", "--no-fast", "--scoring.min-margin", "0.05"]  # fmt: skip
    assert main(args) == 0
    assert f"answers to 3 prompts: {tmp_path / 'pairs'}" in capsys.readouterr().out
    assert json.loads((tmp_path / "pairs" / "pairs.json").read_text())["scoring"]["min_margin"] == 0.05
    bad = [a if a != str(shards[0]) else str(tmp_path / "missing.parquet") for a in args]
    shutil.rmtree(tmp_path / "pairs")
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("sts-train dpo-pairs: error:")
        and "missing.parquet" in err
        and len(err.splitlines()) == 1
    )
