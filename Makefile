# The study's two commands:  make report   and   make test
# Everything runs inside .venv (created here with python -m venv + pip; torch pinned by the cpu extra).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= cpu,dev,ray
STAMP := $(VENV)/.installed
PAPERMILL := $(PY) -m papermill --cwd notebooks --log-level WARNING
DATASET ?= emoprefer
EXECUTED := reports/executed
GRID ?= params/grid_cpu.yaml
# The CPU grid reruns in seconds, so a run folder whose identity changed (data, prompts, judge or engine
# code) is moved aside to data/predictions/.replaced/ and judged afresh; any other grid refuses by name.
GRID_OPTIONS ?= $(if $(filter params/grid_cpu.yaml,$(GRID)),--overwrite,)
# OFFICIAL_OUTPUTS=DIR: the authors' output-matching/*.npz, imported (python -m helpers.imports) before the analyses
OFFICIAL_OUTPUTS ?=
ANALYSIS_NOTEBOOKS := $(sort $(wildcard notebooks/0[2-8]*.ipynb))
SUMMARY_NOTEBOOKS := $(sort $(wildcard notebooks/09_*.ipynb))

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1
# the notebooks run with notebooks/ as their working directory: a relative data folder is read from here
ifneq ($(strip $(EMOPREFER_DATA)),)
override EMOPREFER_DATA := $(abspath $(EMOPREFER_DATA))
export EMOPREFER_DATA
endif

.PHONY: report test test-vllm bench venv data lint check-python chromium clean-report help

help:
	@echo "make report   build reports/index.html (set EMOPREFER_DATA=/folder/with/csvs when offline)"
	@echo "              OFFICIAL_OUTPUTS=DIR also imports the authors' released output-matching/*.npz"
	@echo "make test     ruff + pytest"
	@echo "make bench    the tournament benchmarks (installs the bench extra: evalica), 3 runs, medians with the load"
	@echo "make test-vllm  the vLLM contract tests in their own .venv-vllm (real vLLM 0.33 on the CPU)"

check-python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python >= 3.10" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || \
	  { echo "error: Python >= 3.10 needed, $(PYTHON) is $$($(PYTHON) -V 2>&1)" >&2; exit 1; }

$(STAMP): pyproject.toml | check-python
	@echo "==> creating/updating $(VENV) (extras: $(EXTRAS); first time takes a few minutes: torch is large)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

venv: $(STAMP)

data: $(STAMP)
	@echo "==> checking the $(DATASET) data"
	@$(PY) -m helpers.data check --dataset $(DATASET) || { \
	  echo "error: the $(DATASET) data could not be found or validated (see above)." >&2; \
	  echo "       Offline? Point EMOPREFER_DATA at a folder with the CSVs, e.g." >&2; \
	  echo "       EMOPREFER_DATA=../shared/data/emoprefer make report" >&2; exit 1; }

report: data
	@mkdir -p $(EXECUTED) reports/tables reports/figures
	@echo "==> 00_data: data audit"
	@$(PAPERMILL) notebooks/00_data.ipynb $(EXECUTED)/00_data.ipynb -p dataset $(DATASET)
	@echo "==> probes: v1's descriptions edited one way each (params/probes.yaml) into data/probes/"
	@$(PY) -m helpers.stats.probes || exit 1
	@if [ -f $(GRID) ]; then echo "==> judging with the CPU judges ($(GRID))"; $(PY) -m helpers.run $(GRID) $(GRID_OPTIONS); fi
	@if [ -n "$(OFFICIAL_OUTPUTS)" ]; then echo "==> importing the authors' released outputs ($(OFFICIAL_OUTPUTS))"; \
	  $(PY) -m helpers.imports official "$(OFFICIAL_OUTPUTS)" --dataset $(DATASET) || exit 1; fi
	@for nb in $(ANALYSIS_NOTEBOOKS) $(SUMMARY_NOTEBOOKS); do \
	  echo "==> $$(basename $$nb .ipynb)"; \
	  $(PAPERMILL) $$nb $(EXECUTED)/$$(basename $$nb) -p dataset $(DATASET) || exit 1; \
	done
	@if command -v quarto >/dev/null 2>&1; then \
	  echo "==> rendering with Quarto"; PATH="$(CURDIR)/$(VENV)/bin:$$PATH" quarto render || exit 1; \
	else \
	  echo "==> quarto not on PATH: rendering with the offline fallback (python -m helpers.report)"; \
	  $(PY) -m helpers.report || exit 1; \
	fi
	@echo "report: $(CURDIR)/reports/index.html"

lint: $(STAMP)
	@echo "==> ruff"
	@$(VENV)/bin/ruff check src tests benchmarks

chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "==> installing chromium for the browser check (apt-get)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	      echo "note: chromium could not be installed; the browser test will be skipped with a reason"; \
	  else echo "note: chromium not installed and apt-get unavailable; the browser test will be skipped"; fi; }

# pytest's workers (pytest-xdist): one per core, at most 4; TEST_JOBS=0 runs in one process.
# --dist loadfile keeps a module's tests, and so its module-scoped fixtures, in one worker; modules are
# handed out in collection order (tests/conftest.py puts the slow ones first), not by their test count.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

test: lint chromium
	@echo "==> pytest ($(TEST_JOBS) workers)"
	@$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The tournament's speed targets (issue 27), beside evalica: installs the bench extra when evalica is missing,
# then 3 runs, each figure printed with the load average and core count, and the medians.
bench: $(STAMP)
	@$(PY) -c "import evalica" 2>/dev/null || { echo "==> installing the bench extra (evalica)"; \
	  $(PY) -m pip install --quiet -e '.[$(EXTRAS),bench]'; }
	@echo "==> benchmarks/bench_tournament.py (3 runs; takes a few minutes)"
	@$(PY) benchmarks/bench_tournament.py --repeat 3 $(BENCH_ARGS)

clean-report:
	rm -rf $(EXECUTED) reports/tables reports/figures reports/index.html reports/runs

# The vLLM contract environment: vLLM 0.33 installed with --no-deps beside the project's CPU torch and
# transformers 5.20.2 (vLLM pins torch 2.14.0 and transformers<5.21, which the cpu extra does not allow).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_REQS := tests/vllm_contract/requirements.txt

$(VLLM_STAMP): $(VLLM_REQS) pyproject.toml | check-python
	@echo "==> creating/updating $(VLLM_VENV) (vllm==0.33.0 --no-deps; first time takes several minutes)"
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	@$(VLLM_PY) -m pip install --quiet --upgrade pip
	@$(VLLM_PY) -m pip install --quiet -r $(VLLM_REQS)
	@$(VLLM_PY) -m pip install --quiet --no-deps vllm==0.33.0 xgrammar==0.2.8 'llguidance>=1.7.0,<1.8.0'
	@$(VLLM_PY) -m pip install --quiet --no-deps torch==2.14.1 torchvision==0.29.1 transformers==5.20.2
	@$(VLLM_PY) -m pip install --quiet --no-deps -e .
	@touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	@echo "==> pytest (real vLLM contract + transformers backend under transformers 5.20.2)"
	@$(VLLM_PY) -m pytest -q -p no:cacheprovider tests/vllm_contract; \
	  rc=$$?; if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc
	@# a process of their own: test_vllm_backend checks that its fake, not the real vLLM, is imported
	@$(VLLM_PY) -m pytest -q -p no:cacheprovider tests/test_hf_backend.py tests/test_vllm_backend.py \
	  tests/test_paper_frames.py
