# infomin-det: set-up, main job and tests. `make setup` is idempotent: a second run with nothing
# changed only checks a stamp file.
#
#   make setup   build .venv (torch, detectron2, pinned deps, this package in editable mode)
#   make demo    the main job (end-to-end demo on CPU)
#   make test    the test suite (starts a loopback SLURM cluster for the tests that need one)
#   make bench   the benchmarks in benchmarks/

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.infomin-det-setup
D2_VERSION := 0.7.2

.PHONY: setup demo test bench clean
setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml Makefile
	@set -e; \
	if [ ! -x $(PY) ]; then \
	  if python3 -c "import detectron2" 2>/dev/null; then \
	    echo "[setup] using the detectron2 already importable by python3 (venv sees system site-packages)"; \
	    python3 -m venv --system-site-packages $(VENV); \
	  else python3 -m venv $(VENV); fi; \
	fi; \
	echo "[setup] pinned packages (requirements.lock)"; \
	$(PIP) install -r requirements.lock; \
	if $(PY) -c "import detectron2" 2>/dev/null; then \
	  echo "[setup] detectron2 present: $$($(PY) -c 'import detectron2; print(detectron2.__file__)')"; \
	else \
	  echo "[setup] detectron2 from the PyPI redistribution sal-detectron2==$(D2_VERSION) (pure-Python use)"; \
	  tmp=$$(mktemp -d); \
	  $(PIP) install --no-deps --only-binary=:all: --python-version 3.10 --target $$tmp sal-detectron2==$(D2_VERSION); \
	  sp=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	  rm -rf $$sp/detectron2; cp -r $$tmp/detectron2 $$tmp/sal_detectron2-*.dist-info $$sp/; \
	  rm -rf $$tmp; \
	fi; \
	$(PIP) install --no-deps --no-build-isolation -e .; \
	$(PY) -c "import detectron2, torch, infomin_det; print('[setup] ok: torch', torch.__version__, 'detectron2', detectron2.__version__)"; \
	touch $(STAMP)

demo: setup
	$(PY) -m infomin_det demo

test: setup
	$(PY) -m pytest -q tests

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
