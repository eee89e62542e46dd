# Two commands: `make local` runs the whole system, `make test` runs the tests. Both set up .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test lint local bench chaos clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup lint browser-deps
	$(BIN)/python -m pytest -q

# Debian's Chromium for tests/test_browser.py (never `playwright install`), and an emoji font so the page's screenshot
# shows what people see. Installed only when missing; apt-get needs root, as on CI.
browser-deps:
	@test -x /usr/bin/chromium -a -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf || { \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-noto-color-emoji; }

.PHONY: browser-deps

local: setup
	$(BIN)/wsm-local

chaos: setup
	$(BIN)/python -m bench.chaos

# The performance benchmark: one table, also in bench/results/latest.json (`--only a`, `--quick`: see bench/run.py).
# Parts a and c need wrk: apt-get install -y wrk.
bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build .local .pytest_cache .ruff_cache

# Deploying each function separately: `make bundle [FUNCTION=name]` builds build/<name>/ (all three without
# FUNCTION); `make deploy-gcp FUNCTION=name [DRY_RUN=1]` runs gcloud; `make deploy-aws-local FUNCTION=name`
# deploys to LocalStack at LOCALSTACK_HOST (default localhost:4566).
FUNCTION ?=

bundle: setup
	$(BIN)/python -m infra.bundle $(FUNCTION)

deploy-gcp: setup
	@test -n "$(FUNCTION)" || { echo "usage: make deploy-gcp FUNCTION=webhook|worker|notifier [DRY_RUN=1]" >&2; exit 2; }
	$(BIN)/python -m infra.deploy_gcp $(FUNCTION)

deploy-aws-local: setup
	@test -n "$(FUNCTION)" || { echo "usage: make deploy-aws-local FUNCTION=webhook|worker|notifier" >&2; exit 2; }
	$(BIN)/python -m infra.deploy_aws $(FUNCTION)

.PHONY: bundle deploy-gcp deploy-aws-local
