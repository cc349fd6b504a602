# The two commands of the README. Both install what is missing first
# (Debian packages with apt-get, the package itself with pip), as root.
PYTHON ?= python3

.PHONY: install demo test lint bench

install:
	PYTHON=$(PYTHON) bash tests/lab/install-deps.sh

demo: install
	$(PYTHON) -m tests.lab.demo

test: install
	$(PYTHON) -m ruff check check_smtp_posture tests
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check check_smtp_posture tests

bench: install
	$(PYTHON) -m tests.lab.bench
