# The two quick-start commands: `make demo` and `make test` (each sets up .venv first).
.PHONY: setup demo test bench-cpu bench-separation bench-classifiers corpus

VENV ?= .venv
PYTHON := $(VENV)/bin/python

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/mirflow demo mirflow-demo

test: setup
	$(PYTHON) -m pytest -q
	@bash scripts/setup-tf.sh
	.venv-tf/bin/python -m pytest -q tests/test_classifiers.py tests/test_models.py tests/test_vggish.py

corpus:
	bash ../shared/corpus/real-music.sh corpus/orchestral
	bash ../shared/corpus/real-music.sh corpus/beats --set beats
