# Quick start: `make run` (the main job) and `make test`; each creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a GPU machine installs its CUDA torch first (see README) and skips this.
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
RUN_DIR ?= runs/demo
# Extras installed by `make install`: the offline TTS/ASR/speaker packages make the real-speech tests run,
# serve (gradio) the web demo and its browser test.
EXTRAS ?= dev,offline,dist,eval,train,serve

.PHONY: install run serve test test-fast lint clean

$(BIN)/sts: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --retries 1 --timeout 15 "$(TORCH)" --extra-index-url $(TORCH_INDEX)
	$(BIN)/pip install -e ".[$(EXTRAS)]"
	touch $@

install: $(BIN)/sts

run: install
	$(BIN)/sts demo --out-dir $(RUN_DIR)

serve: install
	$(BIN)/sts serve --demo-dir $(RUN_DIR)

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
