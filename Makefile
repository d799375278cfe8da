# Two commands from nothing: `make demo` (train a tiny GPT-2 on Tiny Shakespeare, then sample) and
# `make test`. Each creates .venv on first use; only Python 3.11+ and pip are assumed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Offline machines (and CI) read corpora from a local mirror when one sits beside the checkout.
ifneq ($(wildcard ../shared/data),)
export BYTELM_DATA_MIRROR ?= $(abspath ../shared/data)
endif
DEMO_DIR ?= runs/demo
DEMO_STEPS ?= 500

.PHONY: demo test lint venv clean gpu-check speedrun

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m launch.download_data --tiny_shakespeare
	$(PY) -m launch.train --config=configs/gpt2_tiny.py --workdir=$(DEMO_DIR) --overwrite \
		--config.train.steps=$(DEMO_STEPS) --config.sample.generate=0
	$(PY) -m launch.sample --checkpoint_dir=$(DEMO_DIR) --prompt="ROMEO:" --generate=220 \
		--temperature=0.85 --top_k=24 --repeat_penalty=1.25 --repeat_window=24 --seed=11

# Two workers, one test file each: compilation is mostly single-threaded, so two workers keep both
# cores of a small machine busy (tests/conftest.py hands out the slowest files first; the last flag
# keeps that order).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# On a GPU machine: the GPU-only tests and gpt2_small's bfloat16 benchmark, into gpu_check/gpu_check.json
# (bench/gpu_check.sh; it uses the Python and JAX it finds: PYTHON=... to choose).
gpu-check:
	bash bench/gpu_check.sh gpu_check

# Time to quality against real nanoGPT (about half an hour): NANOGPT_DIR is your nanoGPT checkout.
NANOGPT_DIR ?= ../nanoGPT
speedrun: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m launch.benchmark --only=speedrun --peer=nanogpt --nanogpt_dir=$(NANOGPT_DIR)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
