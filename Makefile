# The two commands of the README:
#   make demo   set up .venv if needed, run the demo study (CPU, offline) -> results/report.html
#   make test   set up .venv if needed, run the test suite (what CI runs)
# Both are idempotent; the virtual environment is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
# The CPU wheel lies on this project's machines; elsewhere PyPI gives the CUDA build.
TORCH_SPEC ?= torch==2.13.0
CORES ?= 2
BIN := $(VENV)/bin

.PHONY: demo test study paper lint clean-results

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --configfile config/demo.yaml \
		--cores $(CORES) --rerun-incomplete --keep-going --printshellcmds
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --configfile config/demo.yaml \
		--report results/report.html
	@echo "report: results/report.html  tables: results/tables/comparison.md"

test: $(VENV)/.installed
	$(BIN)/ruff check fusion tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check fusion tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --configfile config/demo.yaml --lint
