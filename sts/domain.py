"""A closed bilingual domain (a traveller in shops, stations and restaurants) for measuring whether a
model translates sentences it has not heard.

    from sts.domain import all_pairs, split_pairs, domain_stats
    split = split_pairs(seed=0, n_test=120)    # split.train, split.test: lists of DomainPair

Each template is written twice, in natural Japanese (counters, particles, polite form) and natural
English (plurals, articles, agreement), and filled from the same slots, so every pair is an exact
translation. The held-out sentences are new *combinations*: every filler and every template of a
held-out sentence occurs in at least `min_seen` training sentences, and no held-out sentence occurs
in training (the compositional splits of SCAN, Lake & Baroni 2018; the held-out phrasings of Fluent
Speech Commands, Lugosch et al. 2019, and SLURP, Bastianelli et al. 2020). `domain_stats()` gives the
size; docs/background.md describes it.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass, field

# English number words for counts, hours and party sizes (Whisper's English normalizer maps them to
# digits on both sides of a score, so words and digits score alike).
_EN_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
               "eleven", "twelve"]  # fmt: skip


@dataclass(frozen=True)
class Filler:
    """One slot value: `key` names it (unique within its slot), `ja` and `en` are its surface forms."""

    key: str
    ja: str
    en: str
    en_plural: str = ""
    counter: str = ""  # the Japanese counter the noun takes: つ (small things), 枚 (flat), 本 (long)


def _item(key: str, ja: str, en: str, plural: str, counter: str) -> Filler:
    return Filler(key, ja, en, plural, counter)


PLACES = [Filler(k, ja, en) for k, ja, en in [
    ("station", "駅", "the station"), ("airport", "空港", "the airport"), ("hotel", "ホテル", "the hotel"),
    ("hospital", "病院", "the hospital"), ("bank", "銀行", "the bank"), ("museum", "博物館", "the museum"),
    ("park", "公園", "the park"), ("library", "図書館", "the library"),
    ("post_office", "郵便局", "the post office"), ("cinema", "映画館", "the cinema"),
]]  # fmt: skip
ITEMS = [
    _item("apple", "りんご", "apple", "apples", "つ"), _item("egg", "卵", "egg", "eggs", "つ"),
    _item("box", "箱", "box", "boxes", "つ"), _item("key", "鍵", "key", "keys", "つ"),
    _item("ticket", "チケット", "ticket", "tickets", "枚"), _item("stamp", "切手", "stamp", "stamps", "枚"),
    _item("map", "地図", "map", "maps", "枚"), _item("shirt", "シャツ", "shirt", "shirts", "枚"),
    _item("umbrella", "傘", "umbrella", "umbrellas", "本"), _item("pen", "ペン", "pen", "pens", "本"),
    _item("banana", "バナナ", "banana", "bananas", "本"), _item("bottle", "ボトル", "bottle", "bottles", "本"),
]  # fmt: skip
COUNTS = [Filler(str(n), str(n), _EN_NUMBERS[n]) for n in range(1, 6)]
TIMES = [Filler(f"{h}h", f"{h}時", f"{_EN_NUMBERS[h]} o'clock") for h in range(1, 13)]
PRICES = [Filler(f"{p}yen", f"{p}円", f"{p} yen") for p in (100, 200, 300, 500, 800, 1000, 1500, 2000)]
PEOPLE = [Filler(k, ja, en) for k, ja, en in [
    ("mother", "母", "my mother"), ("father", "父", "my father"), ("friend", "友達", "my friend"),
    ("brother", "兄", "my brother"), ("sister", "姉", "my sister"), ("colleague", "同僚", "my colleague"),
]]  # fmt: skip
DAYS = [Filler(en.lower(), ja, en) for ja, en in [
    ("月曜日", "Monday"), ("火曜日", "Tuesday"), ("水曜日", "Wednesday"), ("木曜日", "Thursday"),
    ("金曜日", "Friday"), ("土曜日", "Saturday"), ("日曜日", "Sunday"),
]]  # fmt: skip
PARTY = [Filler(f"{n}p", f"{n}人", _EN_NUMBERS[n]) for n in range(1, 7)]

SLOTS: dict[str, list[Filler]] = {
    "place": PLACES, "item": ITEMS, "count": COUNTS, "time": TIMES, "price": PRICES,
    "person": PEOPLE, "day": DAYS, "party": PARTY,
}  # fmt: skip


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _items_en(item: Filler, count: Filler) -> str:
    """ "three apples", "one ticket"."""
    return f"{count.en} {item.en if count.key == '1' else item.en_plural}"


_TSU = {"1": "ひとつ", "2": "ふたつ", "3": "みっつ", "4": "よっつ", "5": "いつつ"}


def _count_ja(item: Filler, count: Filler) -> str:
    """ "みっつ", "2枚", "5本": the number with the noun's counter. The native つ numbers are written
    in kana, as is usual, and because the offline TTS read "3つ" as さんつ."""
    return _TSU[count.key] if item.counter == "つ" else f"{count.ja}{item.counter}"


@dataclass(frozen=True)
class Template:
    """A sentence frame: `slots` in order, `render(values) -> (ja, en)`."""

    key: str
    slots: tuple[str, ...]
    render: object = field(repr=False)  # Callable[[dict[str, Filler]], tuple[str, str]]


def _t(key: str, slots: str, render) -> Template:
    return Template(key, tuple(slots.split()), render)


TEMPLATES = [
    _t("where", "place", lambda v: (f"{v['place'].ja}はどこですか。", f"Where is {v['place'].en}?")),
    _t("buy", "item count", lambda v: (f"{v['item'].ja}を{_count_ja(v['item'], v['count'])}ください。",
                                       f"{_cap(_items_en(v['item'], v['count']))}, please.")),
    _t("go", "time place", lambda v: (f"{v['time'].ja}に{v['place'].ja}へ行きます。",
                                      f"I will go to {v['place'].en} at {v['time'].en}.")),
    _t("how_much", "item", lambda v: (f"この{v['item'].ja}はいくらですか。", f"How much is this {v['item'].en}?")),
    _t("cost", "item count price", lambda v: (
        f"{v['item'].ja}は{_count_ja(v['item'], v['count'])}で{v['price'].ja}です。",
        f"{_cap(_items_en(v['item'], v['count']))} {'is' if v['count'].key == '1' else 'are'} {v['price'].en}.")),
    _t("went_with", "person place", lambda v: (f"{v['person'].ja}と{v['place'].ja}に行きました。",
                                               f"I went to {v['place'].en} with {v['person'].en}.")),
    _t("meet", "day place", lambda v: (f"{v['day'].ja}に{v['place'].ja}で会いましょう。",
                                       f"Let's meet at {v['place'].en} on {v['day'].en}.")),
    _t("table", "party", lambda v: (f"{v['party'].ja}で予約をお願いします。",
                                    f"A table for {v['party'].en}, please.")),
    _t("opens", "place time", lambda v: (f"{v['place'].ja}は{v['time'].ja}に開きます。",
                                         f"{_cap(v['place'].en)} opens at {v['time'].en}.")),
    _t("bought", "person item count", lambda v: (
        f"{v['person'].ja}に{v['item'].ja}を{_count_ja(v['item'], v['count'])}買いました。",
        f"I bought {_items_en(v['item'], v['count'])} for {v['person'].en}.")),
    _t("leave", "day time", lambda v: (f"{v['day'].ja}の{v['time'].ja}に出発します。",
                                       f"I leave at {v['time'].en} on {v['day'].en}.")),
    _t("lost", "place item", lambda v: (f"{v['place'].ja}で{v['item'].ja}をなくしました。",
                                        f"I lost my {v['item'].en} at {v['place'].en}.")),
]  # fmt: skip


@dataclass(frozen=True)
class DomainPair:
    """One aligned sentence pair: `id` is `<template>:<filler keys>`, stable across versions that keep
    the template and its fillers; `units` are the template and slot fillers it is built from."""

    id: str
    template: str
    ja: str
    en: str
    units: tuple[str, ...]  # "template:buy", "item:apple", "count:3", "en:apples", "ja:みっつ", ...


def _words(en: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", en.lower())


def all_pairs() -> list[DomainPair]:
    """Every sentence of the domain, in a fixed order (templates, then slot values)."""
    pairs = []
    for template in TEMPLATES:
        for values in itertools.product(*(SLOTS[s] for s in template.slots)):
            by_slot = dict(zip(template.slots, values, strict=True))
            ja, en = template.render(by_slot)
            units = (f"template:{template.key}",) + tuple(f"{s}:{f.key}" for s, f in by_slot.items())
            # surface forms a filler alone does not fix: "pen"/"pens", "is"/"are", みっつ/2枚
            units += tuple(sorted({f"en:{w}" for w in _words(en)}))
            if "item" in by_slot and "count" in by_slot:
                units += (f"ja:{_count_ja(by_slot['item'], by_slot['count'])}",)
            pairs.append(
                DomainPair(f"{template.key}:" + "-".join(f.key for f in values), template.key, ja, en, units)
            )
    return pairs


@dataclass
class DomainSplit:
    """`train` and `test` (held-out combinations) pairs; `pool` is every training candidate in the
    order `train` was taken from, so a smaller training set is a prefix of a larger one and every
    size shares one held-out set."""

    train: list[DomainPair]
    test: list[DomainPair]
    pool: list[DomainPair]


def _spread(pairs: list[DomainPair], rng: random.Random) -> list[DomainPair]:
    """Each template's pairs spread evenly over the order (the i-th of a template's n pairs sits near
    i/n), so any prefix holds every template in proportion; ties broken at random."""
    rank: Counter[str] = Counter()
    n = Counter(p.template for p in pairs)
    keyed = []
    for p in pairs:
        keyed.append(((rank[p.template] + rng.random()) / n[p.template], p))
        rank[p.template] += 1
    return [p for _, p in sorted(keyed, key=lambda kp: kp[0])]


def split_pairs(
    seed: int = 0,
    n_test: int = 120,
    n_train: int | None = None,
    *,
    min_seen: int = 5,
    smallest_train: int = 250,
) -> DomainSplit:
    """A seeded split into training pairs and held-out combinations.

    Held-out candidates come from each template's combinations (at most a sixth of each); one is
    kept only if every unit it is built from (template and fillers) occurs in at least `min_seen` of
    the first `smallest_train` training pairs, so the rule holds for every training set from that
    size up (a learning curve's smallest point). `train` is the first `n_train` pairs of `pool` (all
    when None). Raises ValueError when `n_test` held-out pairs cannot be found or `n_train` is more
    than the pool or too few for the rule.
    """
    rng = random.Random(seed)
    pairs = all_pairs()
    rng.shuffle(pairs)
    cap = {t: n // 6 for t, n in Counter(p.template for p in pairs).items()}
    taken: Counter[str] = Counter()
    candidates = []
    for pair in pairs:
        if taken[pair.template] < cap[pair.template]:
            candidates.append(pair)
            taken[pair.template] += 1
    ids = {p.id for p in candidates}
    pool = _spread([p for p in pairs if p.id not in ids], rng)
    seen = Counter(u for p in pool[:smallest_train] for u in p.units)
    # A held-out sentence whose unit is rare in training tests that unit, not composition.
    eligible = [p for p in candidates if all(seen[u] >= min_seen for u in p.units)]
    if len(eligible) < n_test:
        raise ValueError(f"the domain holds {len(eligible)} held-out combinations, {n_test} asked")
    test = eligible[:n_test]
    test_ids = {p.id for p in test}
    pool += [p for p in candidates if p.id not in test_ids]  # the unused candidates train, last
    if n_train is not None and n_train > len(pool):
        raise ValueError(f"the domain holds {len(pool)} training pairs, {n_train} asked")
    if n_train is not None and n_train < smallest_train:
        raise ValueError(f"{n_train} training pairs: fewer than smallest_train={smallest_train}, so a "
                         f"held-out unit may be seen fewer than {min_seen} times")  # fmt: skip
    return DomainSplit(pool[:n_train] if n_train is not None else pool, test, pool)


def domain_stats() -> dict:
    """Templates, slot fillers, distinct words per language and distinct sentence pairs."""
    pairs = all_pairs()
    en_words = {w for p in pairs for w in _words(p.en)}
    return {
        "templates": len(TEMPLATES),
        "fillers": sum(len(v) for v in SLOTS.values()),
        "distinct_pairs": len(pairs),
        "en_words": len(en_words),
        "ja_fillers": len({f.ja for v in SLOTS.values() for f in v}),
        "pairs_per_template": dict(Counter(p.template for p in pairs)),
    }
