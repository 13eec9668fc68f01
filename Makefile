# Set-up and the two main jobs. Every target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.comit-installed
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: demo test install bench quality clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c $(CONSTRAINTS) "$(TORCH)"
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/comit demo --out demo-output

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 -q

quality: $(STAMP)
	BIN=$(BIN) scripts/quality.sh bundled eval/quality 128

bench: $(STAMP)
	$(BIN)/comit bench --size B --out benchmarks/latest

clean:
	rm -rf $(VENV) demo-output .pytest_cache
