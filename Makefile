# make install: the virtualenv in .venv (Pulumi.yaml points the Pulumi CLI at the same one).
# make demo:    the local benchmark suite on this machine (see README).
# make test:    every test; .ci/run calls it after installing the Debian tools the tests need.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test check clean

install: $(STAMP)

$(STAMP): pyproject.toml workloads/translation/requirements-fairseq.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# fairseq's own metadata cannot be resolved on current Python: see the file for why.
	$(BIN)/python -m pip install --quiet --no-deps -r workloads/translation/requirements-fairseq.txt
	touch $(STAMP)

# The local benchmark suite through the run pipeline (ernie/demo.py), then the report under results/report/.
demo: install
	$(BIN)/ernie demo

test: install
	$(BIN)/python -m pytest

check: install
	$(BIN)/ernie check -s gcp
	$(BIN)/ernie check -s aws

clean:
	rm -rf $(VENV) results .pytest_cache
