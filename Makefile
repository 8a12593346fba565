# o16n — the two commands of the README are `make run` and `make test`.
# Everything else is a step they depend on: a virtualenv, a Docker engine, the runtime image.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-fast check lint typecheck pytest pytest-postgres image docker venv bench bench-baselines clean chromium ldap nodes postgres haproxy

run: image                     ## serve the API on $$O16N_HOST:$$O16N_PORT (127.0.0.1:12800)
	$(PY) -m controller serve

test: image chromium nodes postgres haproxy check pytest pytest-postgres  ## lint, type-check, every test on the real engine, then on PostgreSQL

test-fast: venv postgres       ## the tests that need no Docker engine, on the fake engine (~1 min)
	$(PY) -m pytest -m "not docker" -n 2

pytest: image nodes postgres haproxy
	$(PY) -m pytest $(PYTEST_ARGS)

# The same tests but Docker's and those about SQLite itself, their apps on a throw-away
# PostgreSQL 15 cluster (tests/postgres_cluster.py, one per worker).
pytest-postgres: venv postgres
	O16N_TEST_DATABASE=postgres $(PY) -m pytest -m "not docker and not sqlite_only" -n 2 $(PYTEST_ARGS)

check: lint typecheck

lint: venv
	$(VENV)/bin/ruff check controller runtime_image/o16n_agent o16n_client tests bench
	$(VENV)/bin/ruff format --check controller runtime_image/o16n_agent o16n_client tests bench

typecheck: venv
	$(VENV)/bin/mypy

image: venv docker             ## build o16n-runtime:<hash> unless it is up to date
	$(PY) -m controller image build

docker:                        ## make sure a Docker engine answers (installs one as root on Debian)
	bash scripts/ensure-docker.sh

chromium:                      ## Debian's chromium for the console's browser test (as root)
	bash scripts/ensure-chromium.sh

nodes:                         ## sshd and ip for the compute-node tests' namespaces (as root)
	bash scripts/ensure-nodes.sh

postgres:                      ## Debian's PostgreSQL 15 server binaries for the tests' clusters (as root)
	bash scripts/ensure-postgres.sh

haproxy:                       ## Debian's HAProxy, in front of the web-node tests' controllers (as root)
	bash scripts/ensure-haproxy.sh

ldap:                          ## OpenLDAP's headers (python-ldap builds on them) and slapd (as root)
	PYTHON="$(PYTHON)" bash scripts/ensure-ldap.sh

venv: $(STAMP)

# `| ldap`: python-ldap compiles against libldap, so its headers come first. Order-only: a
# phony prerequisite, it runs whenever the venv is needed (ensure-ldap.sh returns at once
# when all is there), yet never makes the stamp out of date.
$(STAMP): pyproject.toml runtime_image/requirements.txt | ldap
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]' -r runtime_image/requirements.txt
	touch $(STAMP)

bench: image                   ## benchmarks (figures in bench/results/)
	$(PY) -m bench.run_all

# MLflow and BentoML, bench.consume's further baselines, in a virtualenv of their own: their
# dependencies would fight the project's. bench.consume uses it when it is there.
BASELINES := .venv-baselines

bench-baselines: $(BASELINES)/.installed-stamp  ## MLflow and BentoML for bench.consume

$(BASELINES)/.installed-stamp: bench/baselines-requirements.txt
	$(PYTHON) -m venv $(BASELINES)
	$(BASELINES)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BASELINES)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/baselines-requirements.txt
	touch $@

clean:
	rm -rf $(VENV) $(BASELINES) .mypy_cache .ruff_cache .pytest_cache runtime_image/wheels
