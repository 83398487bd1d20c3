# Two commands a newcomer needs: `make serve` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# An exported CXR_WEIGHTS_DIR wins (`CXR_WEIGHTS_DIR=/path make serve`), as does `make serve WEIGHTS=/path`.
WEIGHTS ?= $(or $(CXR_WEIGHTS_DIR),weights)
# GPU serving gets its own venv: onnxruntime and onnxruntime-gpu share one package folder.
GPU_VENV := .venv-gpu

.PHONY: serve serve-gpu test lint typecheck check prometheus system-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[serve]'
	touch $@

$(VENV)/.all: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[serve,train,dev,batch]'
	touch $@ $(VENV)/.serve

## Start the REST service on the bundled weights (http://$(HOST):$(PORT)/docs).
serve: $(VENV)/.serve
	CXR_WEIGHTS_DIR=$(WEIGHTS) $(BIN)/python -m service --host $(HOST) --port $(PORT)

$(GPU_VENV)/.serve-gpu: pyproject.toml
	test -x $(GPU_VENV)/bin/python || $(PY) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install -q --upgrade pip
	$(GPU_VENV)/bin/pip install -q -e '.[serve-gpu]'
	touch $@

## Same, on ONNX Runtime's CUDA provider (installed once into .venv-gpu); refuses to start
## when CUDA is not usable (CXR_PROVIDER=auto to allow the CPU).
serve-gpu: $(GPU_VENV)/.serve-gpu
	CXR_WEIGHTS_DIR=$(WEIGHTS) CXR_PROVIDER=$(or $(CXR_PROVIDER),cuda) \
	  $(GPU_VENV)/bin/python -m service --host $(HOST) --port $(PORT)

## Install everything, then lint, type-check and run the whole suite.
test: $(VENV)/.all system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy service model_export
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(VENV)/.all
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(VENV)/.all
	$(BIN)/mypy service model_export

## Deployment files: Dockerfile lint, compose files against the Compose Specification,
## Prometheus config and rules, alert unit tests (all also run by tests/deploy).
check: $(VENV)/.all prometheus
	$(BIN)/hadolint --config deploy/hadolint.yaml Dockerfile
	$(BIN)/docker-compose --env-file .env.example -f docker-compose.yml config -q
	$(BIN)/docker-compose --env-file .env.example -f docker-compose.yml -f docker-compose.cpu.yml config -q
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/alerts_test.yml

## Debian packages the tests start for real: Prometheus (monitoring), Chromium + chromedriver
## (viewer), DCMTK (DICOM SR). Installed only when run as root; otherwise those tests skip.
SYSTEM_TOOLS := prometheus promtool chromium chromedriver dsrdump
SYSTEM_PKGS := prometheus chromium chromium-driver dcmtk
system-deps:
	@missing=0; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing=1; done; \
	  if [ $$missing = 1 ]; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PKGS) >/dev/null; \
	    else echo "missing system tools (apt-get install $(SYSTEM_PKGS)): their tests will skip"; fi; fi

prometheus: system-deps

clean:
	rm -rf $(VENV) $(GPU_VENV) .pytest_cache .mypy_cache .ruff_cache
