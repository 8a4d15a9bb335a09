"""The closed bilingual domain: aligned pairs, and held-out combinations that never leak into training
and are built only from words training has heard."""

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
