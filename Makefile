# make install:    the virtualenv in .venv, exactly as requirements.lock pins it (Pulumi.yaml points the Pulumi CLI
#                  at the same one).
# make lock:       refresh requirements.lock after editing pyproject.toml or requirements-fairseq.txt (keeps every
#                  other pin; `make lock LOCK_ARGS=--upgrade` moves everything, `LOCK_ARGS='-P NAME'` one package).
# make lock-check: fail if requirements.lock no longer matches its inputs (.ci/run runs it first).
# make demo:       the local benchmark suite on this machine (see README).
# make test:       every test; .ci/run calls it after installing the Debian tools the tests need. It builds
#                  .venv-xla first (make xla-env), which tests/integration/test_translation_xla.py runs fairseq's TPU path in.
# make test-fast: tests/unit alone, under a minute, for the edit loop (tests/integration needs SSH hosts, training,
#                  pip builds, a browser).
# make xla-env:    .venv-xla, exactly as requirements-xla.lock pins it: torch 2.9.0 and torch_xla 2.9.0 (the release
#                  Cloud TPU VMs pin) with the translation workload's needs; on a machine without a TPU it computes
#                  on XLA's CPU device (PJRT_DEVICE=CPU). About 7 GB, a minute from PyPI here (README, translation).
# make xla-lock:   refresh requirements-xla.lock after editing workloads/translation/requirements*.txt (keeps pins;
#                  LOCK_ARGS as for make lock).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV     := $(BIN)/uv
LOCK   := requirements.lock
# What the lock is made from. ve-fairseq is in it without its declared needs ([tool.uv.dependency-metadata] in
# pyproject.toml: the --no-deps install, see requirements-fairseq.txt for why).
LOCK_INPUTS := pyproject.toml workloads/translation/requirements-fairseq.txt
# The CPU build of torch lies here on these machines (torch-2.13.0+cpu-cp311-...whl); PyPI has only CUDA builds.
WHEELS ?= /opt/wheels
LOCK_ARGS ?=
# The XLA environment: its own lock (torch_xla 2.9.0 needs exactly torch 2.9.0, not .venv's CPU build), made with
# .venv's uv and for .venv's Python, from PyPI only (torch's CUDA wheels come with it: torch_xla loads them).
XLA_VENV  := .venv-xla
XLA_STAMP := $(XLA_VENV)/.installed
XLA_LOCK  := requirements-xla.lock
XLA_INPUTS := workloads/translation/requirements-xla.txt
COMPILE = $(UV) pip compile --quiet --python $(BIN)/python --extra dev --generate-hashes \
	--find-links $(WHEELS) --emit-find-links --custom-compile-command 'make lock' $(LOCK_INPUTS)

.PHONY: install lock lock-check xla-env xla-lock demo test test-fast check clean

install: $(STAMP)

# uv itself is pinned in the lock (the dev extra); pip bootstraps that same file, by its hashes, into a new venv.
$(UV): $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	awk '/^uv==/ {p = 1; print; next} p && /^ +--hash/ {print; next} {p = 0}' $(LOCK) > $(VENV)/uv-requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
		-r $(VENV)/uv-requirements.txt
	touch $@

# uv pip sync installs exactly what the lock lists, by hash, and removes anything else; it resolves nothing,
# so no declared dependency (ve-fairseq's torchaudio) can pull in more. The one sdist (antlr4-python3-runtime 4.9.3,
# hydra-core's) builds with the lock's setuptools. Then ernie itself, editable, also with the lock's setuptools.
$(STAMP): $(UV) $(LOCK) pyproject.toml
	$(UV) pip sync --quiet --python $(BIN)/python --require-hashes --build-constraints $(LOCK) $(LOCK)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $(STAMP)

lock: $(UV)
	$(COMPILE) $(LOCK_ARGS) --output-file $(LOCK)

# Resolves again from the committed pins (uv keeps a pin that still fits) and compares the pins: a file that
# PyPI adds later to a pinned release changes only --hash lines, which this ignores.
lock-check: $(UV)
	cp $(LOCK) $(VENV)/lock-check.txt
	$(COMPILE) --output-file $(VENV)/lock-check.txt
	sed -e '/^ *--hash=/d' -e 's/ \\$$//' $(LOCK) > $(VENV)/lock-check.committed
	sed -e '/^ *--hash=/d' -e 's/ \\$$//' $(VENV)/lock-check.txt > $(VENV)/lock-check.fresh
	@diff -u $(VENV)/lock-check.committed $(VENV)/lock-check.fresh || { \
		echo "$(LOCK) does not match $(LOCK_INPUTS): run \`make lock\` and commit $(LOCK)." >&2; exit 1; }

# The same sync as install's, into .venv-xla; antlr4's sdist builds with requirements.lock's setuptools.
xla-env: $(XLA_STAMP)

$(XLA_STAMP): $(UV) $(XLA_LOCK) $(LOCK)
	test -x $(XLA_VENV)/bin/python || $(PYTHON) -m venv $(XLA_VENV)
	$(UV) pip sync --quiet --python $(XLA_VENV)/bin/python --require-hashes --build-constraints $(LOCK) $(XLA_LOCK)
	touch $(XLA_STAMP)

xla-lock: $(UV)
	$(UV) pip compile --quiet --python $(BIN)/python --generate-hashes --custom-compile-command 'make xla-lock' \
		$(LOCK_ARGS) $(XLA_INPUTS) --output-file $(XLA_LOCK)

# The local benchmark suite through the run pipeline (ernie/demo.py), then the report under results/report/.
demo: install
	$(BIN)/ernie demo

test: install xla-env
	$(BIN)/python -m pytest

# The edit loop: tests/unit only (pure: no SSH hosts, training, pip builds or browser), under a minute.
test-fast: install
	$(BIN)/python -m pytest tests/unit

check: install
	$(BIN)/ernie check -s gcp
	$(BIN)/ernie check -s aws

clean:
	rm -rf $(VENV) $(XLA_VENV) results .pytest_cache
