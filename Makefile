# infomin-det: set-up, main job and tests. `make setup` is idempotent: a second run with nothing
# changed only checks a stamp file.
#
#   make setup   build .venv (torch, detectron2, pinned deps, this package in editable mode)
#   make setup PYTHON=$(which python)   on a cluster: build .venv on a Python that has torch (and
#                detectron2): it is kept, never reinstalled; only the locked packages that Python lacks
#                are installed, with --no-deps (tools/missing_requirements.py; docs/install.md)
#   make demo    the main job (end-to-end demo on CPU)
#   make test    the test suite: two pytest-xdist workers, then the tests of the loopback SLURM cluster
#                (started for them) on their own, one at a time (beside a busy worker, the requeue tests once
#                saw a requeued job reported failed: docs/launch.md, "Known gaps")
#   make bench   the benchmarks in benchmarks/

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.infomin-det-setup
D2_VERSION := 0.7.2
# pyproject's build-system: setuptools >= 77 reads its SPDX `license = "MIT"` (a kept Python's may be older)
SETUPTOOLS_MIN := 77

.PHONY: setup demo test bench clean
setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml Makefile tools/missing_requirements.py
	@set -e; \
	if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)" 2>/dev/null; then \
	    echo "[setup] $(PYTHON) has torch: keeping it (venv sees its site-packages; torch is never installed here)"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); created=1; \
	  else $(PYTHON) -m venv $(VENV); fi; \
	elif [ "$(origin PYTHON)" = "command line" ]; then \
	  echo "[setup] $(VENV) exists: PYTHON=$(PYTHON) only chooses the Python of a new one (make clean first)"; \
	fi; \
	if grep -qsiE '^include-system-site-packages *= *true' $(VENV)/pyvenv.cfg; then \
	  echo "[setup] kept torch: is it in the supported range? (infomin-det doctor --only torch)"; \
	  if ! $(PY) -m infomin_det doctor --only torch; then \
	    echo "[setup] refused: the kept torch / torchvision above is not supported and was left as it is; nothing was installed"; \
	    if [ -n "$$created" ]; then rm -rf $(VENV); fi; exit 1; \
	  fi; \
	  $(PY) tools/missing_requirements.py --keep-torch requirements.lock > $(VENV)/.infomin-det-missing; \
	  if [ -s $(VENV)/.infomin-det-missing ]; then \
	    echo "[setup] locked packages this Python lacks (--no-deps): $$(tr '\n' ' ' < $(VENV)/.infomin-det-missing)"; \
	    $(PIP) install --no-deps -r $(VENV)/.infomin-det-missing; \
	  else echo "[setup] every locked package is already installed"; fi; \
	  $(PY) -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < $(SETUPTOOLS_MIN))" 2>/dev/null || \
	    { echo "[setup] setuptools < $(SETUPTOOLS_MIN) cannot build this package: the locked one, into the venv only"; \
	      $(PIP) install --no-deps "$$(grep -iE '^setuptools==' requirements.lock)"; }; \
	else \
	  echo "[setup] pinned packages (requirements.lock)"; \
	  $(PIP) install -r requirements.lock; \
	fi; \
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
	if grep -qsiE '^include-system-site-packages *= *true' $(VENV)/pyvenv.cfg; then \
	  echo "[setup] kept packages: does what is required work with them? (infomin-det doctor)"; \
	  if ! $(PY) -m infomin_det doctor --only python torch distributed detectron2 pycocotools submitit; then \
	    mend=$$($(PY) -m pip check 2>/dev/null | $(PY) tools/missing_requirements.py --keep-torch --conflicts requirements.lock | tr '\n' ' '); \
	    echo "[setup] refused: what is required does not work with this Python's own packages (above); torch was not touched"; \
	    if [ -n "$$mend" ]; then echo "  fix: the locked versions of what conflicts, into $(VENV) only: $(PIP) install --no-deps $$mend; then make setup"; \
	    else echo "  fix: follow the fix lines above (\`$(PY) -m pip check\` lists version conflicts), then make setup"; fi; \
	    exit 1; \
	  fi; \
	fi; \
	$(PY) -c "import detectron2, torch, infomin_det; print('[setup] ok: torch', torch.__version__, 'detectron2', detectron2.__version__)"; \
	touch $(STAMP)

demo: setup
	$(PY) -m infomin_det demo

test: setup
	@status=0; \
	$(PY) -m pytest -q -n 2 -m "not slurm" --durations=20 tests || status=1; \
	$(PY) -m pytest -q -m slurm --durations=10 tests || status=1; \
	exit $$status

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
