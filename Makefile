# Set-up and entry points. Needs only python3.10 on the machine.
VENV    := .venv
PY      := $(VENV)/bin/python
PYTHON310 ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do $$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON310)" || { echo "error: python3.10 not found (lava-nc needs Python 3.10); install it or pass PYTHON310=/path/to/python3.10" >&2; exit 1; }
	$(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==24.2
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -c 'from lava_dtss.model import cuba_kernel; cuba_kernel.get()'   # builds the compiled neuron loop once (~1 min)
	touch $@

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

setup: $(VENV)/.installed

# Train the tiny DTSS ViT on scikit-learn's digits, export NetX HDF5, run it on Lava.
demo: setup
	$(PY) scripts/train_slayer.py --out runs/demo --overwrite
	$(PY) scripts/run_lava.py --model runs/demo/model.net

# two workers (one per core of the reference machine), whole files per worker (their fixtures built once);
# then the tests that check machine-wide state (shared-memory segments) alone; then the tutorials, each
# notebook executed top to bottom (nbmake; outputs are not written back: the repository keeps them stripped)
test: setup
	$(PY) -m pytest -n 2 --dist loadfile -m 'not serial'
	$(PY) -m pytest -m serial
	$(PY) -m pytest --nbmake --nbmake-timeout=1200 -n 2 tutorials/

bench: $(VENV)/.bench
	$(PY) scripts/benchmark.py

clean:
	rm -rf $(VENV) runs
