# Two commands on a fresh machine:
#   make demo   - install into .venv and run the default comparison on the built-in synthetic data
#   make test   - install into .venv-test and run the test suite
PYTHON ?= python3
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test clean

.venv/.installed: pyproject.toml
	$(PYTHON) -m venv .venv
	.venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	.venv/bin/python -m pip install --quiet $(TORCH)
	.venv/bin/python -m pip install --quiet -e '.[weights,onnx]'
	touch $@

.venv-test/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-test
	.venv-test/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	.venv-test/bin/python -m pip install --quiet $(TORCH)
	.venv-test/bin/python -m pip install --quiet -e '.[test,weights,onnx]'
	touch $@

demo: .venv/.installed
	.venv/bin/toolkit compare --out runs/demo

# The suite runs on every core (pytest-xdist, at most 4 workers; the Ray tests share one), then the
# tests judged by wall-clock timings run alone: a latency target cannot be judged beside another test.
test: .venv-test/.installed
	status=0; \
	.venv-test/bin/python -m pytest -q -n auto --maxprocesses 4 --dist loadgroup -m 'not timing' --durations=15 || status=1; \
	.venv-test/bin/python -m pytest -q -m timing --durations=5 || status=1; \
	exit $$status

clean:
	rm -rf .venv .venv-test runs
