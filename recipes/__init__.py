"""Recipes: orchestration that runs several stages, above all of them.

    sts demo -o runs/demo          # recipes.demo: the whole pipeline offline on a CPU, with a report
    sts tiny-run -o runs/tiny      # recipes.tiny_run: every stage on tiny random models in a minute

The layering (checked by `tests/test_layering.py`): `sts` is the base and imports no stage; each
stage (`corpus_builder`, `tokenizer_ext`, `train`, `infer`) imports only itself and `sts`; the
recipes, the umbrella `sts` command (`recipes.cli`) and `benchmarks/` may import anything, and
nothing imports them.
"""
