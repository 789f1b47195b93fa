# connbench: `make bench` and `make test` work on a fresh machine.
# torch is pinned here so that a CPU machine gets the local CPU wheel; GPU users override:
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   ?= .venv
SWEEP  ?= default
WORKERS ?= 2
RESULTS ?= results
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.connbench-installed

.PHONY: setup test bench report report-check lint perf perf-gate kernels clean

setup: $(STAMP)

# Re-runs only when the venv is missing or pyproject.toml / the torch pin changed.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest tests

bench: setup
	$(PY) -m connbench run $(SWEEP) --results $(RESULTS) --workers $(WORKERS)
	$(PY) -m connbench report $(SWEEP) --results $(RESULTS)

report: setup
	$(PY) -m connbench report $(SWEEP) --results $(RESULTS)

# the report as a reader sees it: REPORT.html in headless Chromium, screenshot beside it
report-check: setup
	$(PY) -m connbench.report.browser reports/$(SWEEP)/REPORT.html reports/$(SWEEP)/REPORT.png

kernels: setup
	$(PY) -m connbench kernels --hidden 2048 --batch 32 --steps 100 --threads 2

lint: setup
	$(PY) -m ruff check bench tasks tests benchmarks

perf: setup
	$(PY) benchmarks/perf.py

perf-gate: setup
	$(PY) -m connbench gate

clean:
	rm -rf $(VENV) build *.egg-info
