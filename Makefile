# crossinfer: the README's commands. `make demo` runs the main job, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
DEMO_DIR := .work/demo_models

.PHONY: demo demo-python demo-flink test venv lint test-python test-java prism go-e2e flink browser examples bench clean

## venv: the project's virtual environment in .venv (uv from PyPI installs from its cache in seconds)
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(PY) -m uv pip install -q --python $(PY) -c constraints.txt -e ".[dev]"
	touch $@

## demo: the main job - a Java pipeline calling A/B and sequence inference through the
## expansion service on the embedded local runner (Beam's Python job server), printing results
demo: venv
	bash examples/java/run-demo.sh

## demo-flink: the main job's pipeline on a local Flink cluster (1 JobManager + 2 TaskManagers,
## Beam's Flink job server), printing the same report and which TaskManagers ran the inference
demo-flink: venv flink
	bash examples/java/run-demo.sh --runner=flink

## demo-python: the same A/B + sequence from a Python pipeline, no service
demo-python: venv
	$(PY) examples/python/ab_and_sequence.py

## test: lint + every test suite (Python with the Go end-to-end pipeline, then Java unit and
## end-to-end tests)
test: lint test-python test-java

lint: venv
	$(PY) -m ruff check python tests examples/python $(wildcard bench)
	$(PY) -m mypy
	$(PY) -m crossinfer.spec.schema --check
	@test -z "$$(gofmt -l tests/go)" || { echo "gofmt: run gofmt -w tests/go" >&2; exit 1; }

test-python: venv browser prism go-e2e
	$(PY) -m pytest -q tests

## browser: Debian's chromium, which renders the experiment report's HTML in a test (apt-get as
## root when missing; elsewhere the test is skipped, saying so, except in CI where it fails)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium is not installed (needs root and apt-get): the HTML rendering test is skipped"

## prism: Beam's Prism runner from the Go module proxy, into .tools/bin (cached in ~/.cache/crossinfer)
prism:
	bash java/scripts/build-prism.sh

## go-e2e: the Go end-to-end pipeline (tests/go; Beam's Go SDK from the Go module proxy) into
## .tools/bin (cached in ~/.cache/crossinfer, as Prism is)
go-e2e:
	bash tests/go/build.sh

## flink: Beam's Flink job server and Flink 1.19 as jars from Maven, into .tools/flink/lib (cached in ~/.cache/crossinfer)
flink:
	bash java/scripts/build-flink.sh

## test-java: Surefire + Failsafe (no -q: CI reads the "Tests run" lines)
test-java: venv prism flink
	mvn -B -ntp -f java/pom.xml verify

## examples: run every Python example
examples: venv
	for f in ab_and_sequence keyed streaming experiment_streaming; do echo "== examples/python/$$f.py"; $(PY) examples/python/$$f.py || exit 1; done

## bench: every benchmark side by side (not a test: prints ratios, writes bench/results/*.json + chart.png)
bench: venv
	$(PY) -m uv pip install -q --python $(PY) -c constraints.txt -r bench/requirements.txt
	$(PY) -m bench

clean:
	rm -rf .work .pytest_cache
