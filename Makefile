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

test: .venv-test/.installed
	.venv-test/bin/python -m pytest -q --durations=15

clean:
	rm -rf .venv .venv-test runs
