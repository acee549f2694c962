# Entry points: `make demo`, `make test` and `make bench`. Each creates .venv if missing and
# installs torch==2.13.0 first (the CPU wheel on disk), then neurosim with its extras (xylo: xylosim,
# built from its C++ source with pybind11, so a C++ compiler such as g++ must be present).
# `make bench` (the benchmark suite, benchmarks/) installs nothing more: it uses snnTorch and
# SpikingJelly when they are installed (extra `bench`: pip install --no-deps snntorch spikingjelly loguru).
# Stamps make re-runs skip work already done.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
EXTRAS := dev,nir,events,xylo
# Peer simulators for the NIR interop tests and the benchmarks. They pin or pull other torch
# builds through their own requirements, so they go in with --no-deps beside torch==2.13.0.
PEERS  := snntorch==1.0.0 nirtorch==2.6 spikingjelly==2.0.0 loguru

.PHONY: demo test install bench clean

demo: $(VENV)/.neurosim-installed
	$(VENV)/bin/neurosim demo

test: $(VENV)/.neurosim-installed $(VENV)/.peers-installed
	$(PY) -m pytest -q

bench: $(VENV)/.neurosim-installed
	$(PY) -m benchmarks

install: $(VENV)/.neurosim-installed

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch-installed: | $(PY)
	$(PIP) install --quiet $(TORCH)
	touch $@

$(VENV)/.neurosim-installed: $(VENV)/.torch-installed setup.cfg pyproject.toml
	$(PIP) install --quiet -e '.[$(EXTRAS)]'
	touch $@

$(VENV)/.peers-installed: $(VENV)/.neurosim-installed
	$(PIP) install --quiet --no-deps $(PEERS)
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
