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

.PHONY: demo test study paper lint clean-results chromium

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
	mkdir -p results/demo && cp results/tables/front_page.md results/tables/states.md \
		results/tables/dynamics.md results/demo/
	@echo "report: results/report.html  tables: results/tables/comparison.md"
	@echo "README tables: .venv/bin/fusion readme (rewrites them from results/demo, results/study)"

# The study tier (config/study.yaml, <= 2 h on 2 cores): real rMD17 and acetylacetone files,
# downloaded on first use (pinned sha256) or placed first with `.venv/bin/fusion data import
# DIR`. Then `fusion study` copies runs, tables and figures to results/study/ (committed).
study: $(VENV)/.installed
	@start=$$(date +%s); \
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --configfile config/study.yaml \
		--cores $(CORES) --rerun-incomplete --keep-going --printshellcmds && \
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/fusion study --config config/study.yaml \
		--out-dir results/study --wall-seconds $$(( $$(date +%s) - start ))
	@echo "study tables: results/study/tables/study.md"

# The report test (tests/report) opens results/report.html in headless Chromium (Debian's
# package): installed here when missing, so that test never skips.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing chromium (apt-get) for the report test"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "error: chromium is missing; tests/report needs it. As root run:" \
				"apt-get update && apt-get install -y chromium" >&2; \
			exit 1; \
		fi; }

test: $(VENV)/.installed chromium
	$(BIN)/ruff check fusion tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check fusion tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --configfile config/demo.yaml --lint
