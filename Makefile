# One entry point for humans and CI. `make setup` is idempotent: it does nothing when up to date.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CDK := node_modules/.bin/cdk
CHECKOV_VENV := .venv-checkov
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# jsii warns on every call under Node 20 (end of life); the warning is not ours to fix here.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Python keeps compiled modules in __pycache__ (git-ignored). Some images turn that off (PYTHONDONTWRITEBYTECODE):
# then every test worker and every CLI subprocess the tests start compiles the project's modules again (~30 % of a
# short command's CPU time, ~3 s of each worker's collection).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup test-setup test-packages check test lint demo local-aws synth bench clean coverage mutation

# `make setup`: what the demo and the command line need, nothing that needs root (a venv and the local CDK CLI).
setup: $(VENV)/.installed $(CDK)

# `make test-setup`: setup plus what only the tests use: checkov's own venv and the system packages below.
test-setup: setup $(CHECKOV_VENV)/.installed test-packages

# Debian packages only the tests use, each known by a file it installs: a software PKCS#11 token (softhsm2), a
# PostgreSQL server (the shared-journal tests start a throw-away cluster on loopback themselves), and a real
# headless browser with its WebDriver (the operator page's test). One apt run installs whatever is missing; it
# needs root (CI has it; elsewhere run `sudo make test-packages` once).
SYSTEM_PACKAGES := softhsm2 postgresql chromium chromium-driver
SYSTEM_FILES := /usr/lib/softhsm/libsofthsm2.so /usr/lib/postgresql /usr/bin/chromium /usr/bin/chromedriver

test-packages: $(SYSTEM_FILES)

$(SYSTEM_FILES) &:
	@command -v apt-get >/dev/null || { echo "ERROR the tests need $(SYSTEM_PACKAGES) (Debian package names) and apt-get is not here: install them with this system's package manager, then run make test again (make demo does not need them)" >&2; exit 1; }
	@[ "$$(id -u)" = 0 ] || { echo "ERROR the tests need $(SYSTEM_PACKAGES), and installing them needs root: run 'sudo make test-packages' once, then make test (make demo does not need them)" >&2; exit 1; }
	apt-get update -qq && apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	@# pip's and setuptools' own notes (editable-install warnings) are kept in a log, shown only when pip fails.
	$(PY) -m pip install --quiet --upgrade pip > $(VENV)/pip.log 2>&1 || true
	$(PY) -m pip install --quiet -r requirements-dev.txt -e . > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	touch $@

$(CDK): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error --no-update-notifier > /dev/null
	touch $@

# Prints the time of the whole gate (lint, types, suite); the target is under 3 minutes on 2 quiet cores.
# mypy runs beside the suite (a fresh clone's mypy takes ~13 s of one core: pyproject.toml reads the aws-cdk-lib
# modules the stacks do not import as Any) while the suite waits on subprocesses and loopback I/O; its report
# follows the suite's, and either failing fails the gate. Three workers on two cores: much of the suite waits
# (leases running out, subprocesses, loopback), and a third worker fills that time (measured on 2 quiet cores:
# 221 s with two, 178 s with three, 191 s with four, each extra worker collecting and synthesizing again).
test: test-setup
	@start=$$(date +%s); types=$$(mktemp); \
	$(PY) -m ruff check . && $(PY) -m ruff format --check . || exit 1; \
	{ $(PY) -m mypy > $$types 2>&1; echo $$? >> $$types; } & \
	$(PY) -m pytest -n 3 --dist loadfile; status=$$?; \
	wait; types_status=$$(tail -n 1 $$types); head -n -1 $$types; rm -f $$types; \
	[ "$$types_status" = 0 ] || status=1; \
	echo "make test: $$(( $$(date +%s) - start )) s (lint, types and suite)"; exit $$status

# The fast tier: lint, types and the unit tests (no server, no subprocess; tests/conftest.py keeps it so).
# Under 30 s on a quiet 2-core machine once mypy's cache is warm.
check: setup
	@start=$$(date +%s); \
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy && \
	$(PY) -m pytest -m "not integration" -q; status=$$?; \
	echo "make check: $$(( $$(date +%s) - start )) s (lint, types and the unit tier)"; exit $$status

# Statement and branch coverage of the whole suite, child processes included (the CLI run as a subprocess,
# batch workers, xdist's workers): coverage's `patch = subprocess` in pyproject.toml. Slower than `make test`.
coverage: test-setup
	rm -f .coverage .coverage.*
	$(PY) -m coverage run -m pytest -n 3 --dist loadfile -q
	$(PY) -m coverage combine -q && $(PY) -m coverage report --skip-covered --sort=cover

# Mutation testing (mutmut) of the issue-23 scope against the unit tier, on both cores, stopped after
# MUTATION_BUDGET seconds (then `mutmut results` lists what ran). Results: docs/development.md.
MUTATION_BUDGET ?= 1800
mutation: setup
	rm -rf mutants
	timeout $(MUTATION_BUDGET) nice $(VENV)/bin/mutmut run --max-children 2 || test $$? -eq 124
	$(VENV)/bin/mutmut results --all true | $(PY) -c 'import sys, collections; \
	c = collections.Counter(l.rsplit(": ", 1)[-1].strip() for l in sys.stdin if ": " in l); \
	k, s = c["killed"], c["survived"]; print(dict(c)); print(f"score {k}/{k + s} = {100 * k / max(k + s, 1):.1f} %")'

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy

synth: setup
	$(CDK) synth --quiet

# AWS=local (default): the embedded local endpoint; AWS=real: the account of AWS_PROFILE.
AWS ?= local
demo: setup
	$(PY) -m devtools.demo --out out/demo --aws $(AWS)

# A local AWS endpoint to keep: the stacks deployed into it, the export lines printed; Ctrl-C stops it.
local-aws: setup
	$(PY) -m devtools.local_endpoint $(LOCAL_AWS_ARGS)

bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules cdk.out out .pytest_cache mutants .coverage .coverage.*
