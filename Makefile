# Entry points: `make demo`, `make test`, `make docs` and `make bench`. Each creates .venv if
# missing and installs from constraints.txt, the lock of every package version (transitive ones
# included): torch==2.13.0 first (the CPU wheel on disk), then neurosim with its extras (xylo:
# xylosim, built from its C++ source with pybind11, so a C++ compiler such as g++ must be present).
# `make lock` refreshes the lock from today's registry (a throw-away venv, then pip freeze);
# tests/test_lock.py fails when setup.cfg's requirements and the lock disagree.
# `make bench` (the benchmark suite, benchmarks/) uses snnTorch and SpikingJelly when installed.
# Stamps make re-runs skip work already done.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
LOCK   := constraints.txt
TORCH  := torch==2.13.0
EXTRAS := dev,docs,nir,events,xylo
# Peer simulators for the NIR interop tests and the benchmarks. They pin or pull other torch
# builds through their own requirements, so they go in with --no-deps beside torch==2.13.0.
PEERS  := snntorch==1.0.0 nirtorch==2.6 spikingjelly==2.0.0 loguru

.PHONY: demo test docs install bench lock clean

demo: $(VENV)/.neurosim-installed
	$(VENV)/bin/neurosim demo

test: $(VENV)/.neurosim-installed $(VENV)/.peers-installed
	$(PY) -m pytest -q

# the API reference, warnings as errors; tests/test_docs.py builds it too
docs: $(VENV)/.neurosim-installed
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

bench: $(VENV)/.neurosim-installed
	$(PY) -m benchmarks

install: $(VENV)/.neurosim-installed

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch-installed: $(LOCK) | $(PY)
	$(PIP) install --quiet -c $(LOCK) $(TORCH)
	touch $@

$(VENV)/.neurosim-installed: $(VENV)/.torch-installed setup.cfg pyproject.toml $(LOCK)
	$(PIP) install --quiet -c $(LOCK) -e '.[$(EXTRAS)]'
	touch $@

$(VENV)/.peers-installed: $(VENV)/.neurosim-installed
	$(PIP) install --quiet --no-deps -c $(LOCK) $(PEERS)
	touch $@

# Refresh the lock: resolve everything anew in a throw-away venv and freeze it.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet $(TORCH)
	.lock-venv/bin/python -m pip install --quiet -e '.[$(EXTRAS)]'
	.lock-venv/bin/python -m pip install --quiet --no-deps $(PEERS)
	{ echo "# The lock: every package version make demo / make test / .ci/run install (pip -c)."; \
	  echo "# Refresh with: make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) build *.egg-info docs/_build
