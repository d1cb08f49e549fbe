# Two commands on a fresh machine:  `make serve`  and  `make test`.
# Each creates what it needs (idempotently) before it runs.
PYTHON ?= python3
VENV := .venv
ULTRA := .venv-ultra
CASIA_TARBALL := ../shared/data/casia-b-sil-001-074.tar.xz
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test setup-service setup-dev setup-ultra data lint bench browser docker-test docker-clean docker-engine

# --- the service: runtime dependencies only (no torch) -----------------------------------------
$(VENV)/.service:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e .
	touch $@

setup-service: $(VENV)/.service

serve: setup-service
	$(VENV)/bin/gaitid serve --host $(HOST) --port $(PORT)

# --- development: training/export tooling + tests -------------------------------------------
# torch is pinned to 2.13.0 first: pip takes the local CPU wheel, and the `train` extra's range is
# then already satisfied, so nothing pulls a CUDA build into this environment.
$(VENV)/.dev: $(VENV)/.service pyproject.toml
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[train,ray,test]"
	touch $@

# Ultralytics needs torchvision, whose PyPI wheel is a CUDA build that does not import with the
# CPU torch: it lives in its own environment, used only to export YOLO-seg to ONNX.
$(ULTRA)/.ready:
	$(PYTHON) -m venv $(ULTRA)
	$(ULTRA)/bin/pip install -q "torch===2.13.0" torchvision==0.28.0
	$(ULTRA)/bin/pip install -q ultralytics onnx onnxslim onnxruntime
	touch $@

setup-dev: $(VENV)/.dev $(ULTRA)/.ready

data/casia-b/.unpacked:
	@if [ -f $(CASIA_TARBALL) ]; then \
		mkdir -p data/casia-b && tar xJf $(CASIA_TARBALL) -C data/casia-b && touch $@; \
	else echo "no $(CASIA_TARBALL): tests that need CASIA-B will skip"; fi

data: data/casia-b/.unpacked

# The browser test (tests/ui) drives the system's Chromium (Debian's package) with Playwright, which
# downloads no browser. As root (CI) it is installed here; elsewhere tests/ui skips and says why.
browser: setup-dev
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "no chromium and not root: tests/ui will skip (apt-get install chromium)"; fi; }

test: setup-dev data browser
	OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -q

lint: setup-dev
	$(VENV)/bin/ruff check gaitid service model gallery tests bench
	$(VENV)/bin/lint-imports

# --- Docker: both images built, the CPU service run by `docker compose`, tested end to end --------
# Test conveniences, not product behaviour: docker/engine.sh starts an engine only where none answers
# (and stops only the one it started); docker/base-image.sh makes a local Python base image when the
# public one cannot be pulled. The builds' pip trusts the CAs this machine trusts (GAITID_EXTRA_CA,
# a build secret): builds share the host's network, TLS-intercepting proxy included.
GAITID_EXTRA_CA ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
# A Docker engine for docker-test (a test convenience, like `browser`): as root without one, Debian's
# docker.io (and debootstrap, for a local base image when no registry answers) is installed here.
docker-engine:
	@command -v dockerd >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null; \
		fi; }

docker-test: $(VENV)/.dev docker-engine
	@set -e; engine=$$(docker/engine.sh start); echo "docker engine: $$engine"; status=0; \
	base=$$(docker/base-image.sh) || status=$$?; echo "base image: $$base"; \
	if [ $$status = 0 ]; then GAITID_DOCKER_TEST=1 GAITID_PYTHON_IMAGE=$$base GAITID_EXTRA_CA=$(GAITID_EXTRA_CA) \
		OMP_NUM_THREADS=1 \
		$(VENV)/bin/python -m pytest -q -s -x -p no:cacheprovider tests/docker/test_compose_up.py || status=$$?; fi; \
	if [ "$$engine" = started ]; then docker/engine.sh stop; fi; exit $$status

# Images, build cache and the local base image (the engine's data root stays; see docker/engine.sh).
docker-clean:
	-docker image rm gaitid:cpu gaitid:gpu gaitid-local/python:3.11-bookworm
	-docker builder prune -af
