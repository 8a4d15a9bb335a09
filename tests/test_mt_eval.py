"""sts-eval-mt: test-set loading, every backend kind, context assembly, report files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testset_copies import make_flores_plus

from infer.cli import eval_mt_main as main
from infer.mt_eval import MTEvalConfig, evaluate, load_backend, load_test_set
from sts.mt import MTBackend, MTResult

pytest.importorskip("sacrebleu")

FLORES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flores200"


class LookupMT(MTBackend):
    """Knows a few sentences; everything else gets an empty translation. Records contexts.

    Sources in `cut` come back as translations that hit the token budget (truncated)."""

    name = "lookup"

    def __init__(self, table, cut=()):
        self.table, self.cut, self.contexts = table, set(cut), []

    def translate(self, texts, src_lang, tgt_lang, contexts=None):
        self.contexts += list(contexts or [None] * len(texts))
        return [
            MTResult(self.table[t], truncated=t in self.cut)
            if t in self.table
            else MTResult(None, "mt_empty")
            for t in texts
        ]


@pytest.fixture()
def pair_files(tmp_path):
    ja = ["おはようございます。", "駅はどこですか。", "ありがとう。"]
    en = ["Good morning.", "Where is the station?", "Thank you."]
    (tmp_path / "t.ja").write_text("\n".join(ja) + "\n", encoding="utf-8")
    (tmp_path / "t.en").write_text("\n".join(en) + "\n", encoding="utf-8")
    (tmp_path / "t.doc").write_text("d1\nd1\nd2\n", encoding="utf-8")
    return tmp_path, ja, en


def test_scores_reports_and_worst_cases(pair_files):
    folder, ja, en = pair_files
    table = dict(zip(ja, en, strict=True)) | dict(zip(en, ja, strict=True))
    table.pop("Thank you.")  # en->ja of line 3 fails: scored as empty
    cfg = MTEvalConfig(
        backends=["lookup"],
        ja_file=str(folder / "t.ja"),
        en_file=str(folder / "t.en"),
        out_dir=folder / "out",
    )
    report = evaluate(cfg, backends={"lookup": LookupMT(table, cut=[ja[1]])}, argv=["sts-eval-mt"])
    ja_en = report["backends"]["lookup"]["ja-en"]
    assert {s["name"]: s["score"] for s in ja_en["scores"]}["BLEU(13a)"] == pytest.approx(100.0)
    assert ja_en["truncated"] == 1  # counted, still scored as written
    en_ja = report["backends"]["lookup"]["en-ja"]
    assert en_ja["empty"] == 1 and en_ja["truncated"] == 0
    assert en_ja["worst"][0]["line"] == 3 and en_ja["worst"][0]["hypothesis"] == ""
    assert {s["name"] for s in en_ja["scores"]} >= {"BLEU(char)", "chrF++"}
    md = (folder / "out" / "report.md").read_text()
    assert "| lookup | en-ja |" in md and "tok:char" in md
    lines = (folder / "out" / "translations.jsonl").read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[2])["drop_reason"] == "mt_empty"
    assert [json.loads(x)["truncated"] for x in lines] == [
        False,
        False,
        False,
        False,
        True,
        False,
    ]  # en-ja, then ja-en
    assert "| empty | truncated | seconds |" in md
    assert json.loads((folder / "out" / "report.json").read_text())["sentences"] == 3


def test_context_follows_documents(pair_files):
    folder, ja, en = pair_files
    mt = LookupMT(dict(zip(ja, en, strict=True)))
    cfg = MTEvalConfig(
        backends=["lookup"],
        ja_file=str(folder / "t.ja"),
        en_file=str(folder / "t.en"),
        doc_file=str(folder / "t.doc"),
        directions=["ja-en"],
        context=1,
        out_dir=folder / "out",
    )
    evaluate(cfg, backends={"lookup": mt})
    # Wave 0: lines 1 and 3 (documents d1, d2); wave 1: line 2 with line 1 as its context.
    assert mt.contexts == [[], [], [(ja[0], en[0])]]


def test_context_without_documents_is_refused(pair_files):
    folder, *_ = pair_files
    cfg = MTEvalConfig(backends=["x"], ja_file=str(folder / "t.ja"), en_file=str(folder / "t.en"), context=2)
    with pytest.raises(ValueError, match="needs document ids"):
        load_test_set(cfg)


def test_bad_test_sets(tmp_path, pair_files):
    folder, *_ = pair_files
    (tmp_path / "short.en").write_text("one\n", encoding="utf-8")
    with pytest.raises(ValueError, match="3 Japanese lines but 1 English"):
        load_test_set(
            MTEvalConfig(backends=[], ja_file=str(folder / "t.ja"), en_file=str(tmp_path / "short.en"))
        )
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_test_set(MTEvalConfig(backends=[], test_dir=str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match="neither a FLORES\\+ snapshot"):
        load_test_set(MTEvalConfig(backends=[], test_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="expected KIND:MODEL"):
        load_backend("LiquidAI/LFM2-350M-ENJP-MT", MTEvalConfig(backends=[]))
    with pytest.raises(ValueError, match="http:MODEL@BASE_URL"):
        load_backend("http:model-without-url", MTEvalConfig(backends=[]))


def test_cli_with_the_tiny_lfm2_hf_backend(pair_files, tiny_lm_dir, capsys):
    folder, *_ = pair_files
    out = folder / "cli"
    code = main(
        [
            "--backends", f"hf:{tiny_lm_dir}",
            "--ja-file", str(folder / "t.ja"), "--en-file", str(folder / "t.en"),
            "--max-new-tokens", "4", "--worst", "2", "--out-dir", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    entry = report["backends"][f"hf:{tiny_lm_dir}"]
    assert entry["name"] == f"hf:{tiny_lm_dir}"
    for direction in ("en-ja", "ja-en"):
        assert entry[direction]["sentences"] == 3 and len(entry[direction]["worst"]) == 2
        assert all(0 <= s["score"] <= 100 for s in entry[direction]["scores"])
    assert "report:" in capsys.readouterr().err


def test_sts_checkpoint_t2tt_backend(pair_files, extended_lm_dir, tmp_path):
    from sts.testing import save_tiny_xcodec2

    folder, *_ = pair_files
    codec = save_tiny_xcodec2(tmp_path / "xcodec2")
    spec = f"sts:{extended_lm_dir}"
    cfg = MTEvalConfig(
        backends=[spec], ja_file=str(folder / "t.ja"), en_file=str(folder / "t.en"),
        codec=str(codec), max_new_tokens=4, out_dir=folder / "sts",
    )  # fmt: skip
    report = evaluate(cfg)
    assert report["backends"][spec]["name"] == spec
    lines = [json.loads(x) for x in (folder / "sts" / "translations.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and {x["direction"] for x in lines} == {"en-ja", "ja-en"}


@pytest.mark.skipif(not FLORES.is_dir(), reason="FLORES-200 reference data not present")
def test_flores_documents_load_by_url():
    cfg = MTEvalConfig(backends=[], test_dir=str(FLORES), split="dev", max_items=5, context=2)
    test = load_test_set(cfg)
    assert len(test.ja) == len(test.en) == len(test.docs) == 5
    assert all(d and d.startswith("http") for d in test.docs)
    assert test.docs[0] == test.docs[1]  # the first two lines share an article


class PickyMT(MTBackend):
    """Raises on any batch holding a line with "crash" (as a backend does on input it cannot take);
    `always` makes it fail on everything (a broken backend)."""

    name = "picky"

    def __init__(self, always=False):
        self.always, self.calls = always, []

    def translate(self, texts, src_lang, tgt_lang, contexts=None):
        self.calls.append(list(texts))
        if self.always or any("crash" in t for t in texts):
            raise RuntimeError("backend choked on its input")
        return [MTResult(f"T({t})") for t in texts]


def test_untranslatable_lines_are_scored_empty_and_named(tmp_path):
    ja = ["おはよう。", "", "これは<|im_end|>です。", "crash here", "ありがとう。"]
    en = ["Good morning.", "Blank.", "Special.", "Crash.", "Thank you."]
    (tmp_path / "t.ja").write_text("\n".join(ja) + "\n", encoding="utf-8")
    (tmp_path / "t.en").write_text("\n".join(en) + "\n", encoding="utf-8")
    cfg = MTEvalConfig(backends=["picky"], ja_file=str(tmp_path / "t.ja"), en_file=str(tmp_path / "t.en"),
                       directions=["ja-en"], out_dir=tmp_path / "out")  # fmt: skip
    mt = PickyMT()
    report = evaluate(cfg, backends={"picky": mt})
    entry = report["backends"]["picky"]["ja-en"]
    assert entry["sentences"] == 5 and entry["failed"] == 3  # scored over all 5 lines, 3 of them empty
    reasons = {f["line"]: f["reason"] for f in entry["failed_lines"]}
    assert reasons[2] == "untranslatable: blank line"
    assert reasons[3] == "untranslatable: holds the special-token string '<|im_end|>'"
    assert reasons[4].startswith("mt_error: RuntimeError: backend choked")
    assert ["", "これは<|im_end|>です。"] not in mt.calls and [
        "crash here"
    ] in mt.calls  # isolated, never sent
    rows = [json.loads(x) for x in (tmp_path / "out" / "translations.jsonl").read_text().splitlines()]
    assert [r["hypothesis"] for r in rows] == ["T(おはよう。)", "", "", "", "T(ありがとう。)"]
    assert [r["line"] for r in rows if r["error"]] == [2, 3, 4]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Lines not translated (scored as empty)" in md and "picky, ja-en, line 3: untranslatable" in md
    assert "| seconds | failed |" in md and md.count("| picky | ja-en |") == 1

    with pytest.raises(RuntimeError, match="choked"):  # every line fails: a broken backend, not bad lines
        evaluate(cfg, backends={"picky": PickyMT(always=True)})


def test_sts_backend_skips_special_token_lines(extended_lm_dir, tmp_path):
    from sts.testing import save_tiny_xcodec2

    (tmp_path / "t.ja").write_text("おはよう。\n<|s_3|><|s_4|>\n\n", encoding="utf-8")
    (tmp_path / "t.en").write_text("Good morning.\nCodes.\nBlank.\n", encoding="utf-8")
    codec = save_tiny_xcodec2(tmp_path / "xcodec2")
    spec = f"sts:{extended_lm_dir}"
    cfg = MTEvalConfig(backends=[spec], ja_file=str(tmp_path / "t.ja"), en_file=str(tmp_path / "t.en"),
                       codec=str(codec), max_new_tokens=4, out_dir=tmp_path / "sts")  # fmt: skip
    report = evaluate(cfg)  # the t2tt task refuses such text: the run used to stop at line 2
    for direction in ("ja-en", "en-ja"):
        entry = report["backends"][spec][direction]
        assert entry["sentences"] == 3
    assert [f["line"] for f in report["backends"][spec]["ja-en"]["failed_lines"]] == [2, 3]


def test_flores_plus_local_snapshot_aligned_by_id(tmp_path):
    """A snapshot of the hub repo (README configs, {split}/{config}.parquet) is read by the same
    `load_dataset` call as the hub; the English side is shuffled and lacks id 2: pairs follow the ids."""
    make_flores_plus(tmp_path / "flores_plus", missing_en_id=2)
    cfg = MTEvalConfig(backends=[], test_dir=str(tmp_path / "flores_plus"), split="dev", context=1)
    test = load_test_set(cfg)
    assert test.ja == ["今日は晴れです。", "駅はどこですか。"]
    assert test.en == ["It is sunny today.", "Where is the station?"]
    assert test.docs == ["https://en.wikinews.org/wiki/a", "https://en.wikivoyage.org/wiki/b"]
    assert test.name.endswith("(dev)")
    devtest = load_test_set(MTEvalConfig(backends=[], test_dir=str(tmp_path / "flores_plus")))
    assert devtest.en[0] == "It is sunny today. (devtest)"  # the default split


def test_flores_plus_from_the_hub_asks_for_the_right_repo(monkeypatch):
    """Without --test-dir the hub is read: `datasets.load_dataset` (patched at that boundary) is asked
    for openlanguagedata/flores_plus, one config per language, the split, streamed."""
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        text = {"jpn_Jpan": "おはよう。", "eng_Latn": "Good morning."}[name]
        return iter([{"id": 7, "text": text, "url": "https://example.org/d"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    test = load_test_set(MTEvalConfig(backends=[]))
    assert calls == [
        ("openlanguagedata/flores_plus", "jpn_Jpan", {"split": "devtest", "streaming": True}),
        ("openlanguagedata/flores_plus", "eng_Latn", {"split": "devtest", "streaming": True}),
    ]
    assert (test.ja, test.en, test.docs) == (["おはよう。"], ["Good morning."], ["https://example.org/d"])
    assert test.name == "hub:openlanguagedata/flores_plus (devtest)"

    def gated(path, name=None, **kwargs):
        raise FileNotFoundError(f"Dataset '{path}' is a gated dataset on the Hub.")

    monkeypatch.setattr(datasets, "load_dataset", gated)
    with pytest.raises(FileNotFoundError, match="accept its terms on the hub and log in"):
        load_test_set(MTEvalConfig(backends=[], split="dev"))


def test_no_path_outside_the_repository_in_the_package():
    """`grep -rn "shared/" --include=*.py .` finds nothing outside tests/ (the package stands alone)."""
    root = Path(__file__).resolve().parents[1]
    folders = ("sts", "corpus_builder", "tokenizer_ext", "train", "infer", "recipes", "benchmarks")
    hits = [
        f"{path.relative_to(root)}:{n}"
        for folder in folders
        for path in (root / folder).rglob("*.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "shared/" in line
    ]
    assert not hits, hits
