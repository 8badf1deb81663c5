# `make demo` and `make test` work on a fresh clone: they create .venv and install first.
# `make test` builds the docs site strictly (broken links, missing pages, bad docstrings fail) before pytest.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.zipfast-installed
# The torch build that lies on this project's machines' disk (installs without a download).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test test-all bench test-gpu bench-gpu docs clean

install: $(STAMP)

# The install also builds csrc/ (CMake; CUDA when nvcc is found), so kernel sources are inputs.
$(STAMP): setup.py pyproject.toml CMakeLists.txt $(shell find csrc -type f 2>/dev/null)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/zipfast demo

test: $(STAMP) docs
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	$(PY) -m pytest bench -q --benchmark-json=bench/results/latest.json && $(PY) bench/report.py

# On a machine with a CUDA GPU: build the CUDA kernels (required), then `zipfast verify-gpu`:
# self-checks, graph vs eager, GPU vs CPU trajectory, figures, the GPU tests and benchmarks,
# all written to one record (gpu-verify/verify-gpu.{json,md}).
test-gpu: $(STAMP)
	ZIPFAST_BUILD_CUDA=1 $(PY) -m pip install -q --no-deps --no-build-isolation -e .
	TRITON_INTERPRET=0 $(VENV)/bin/zipfast verify-gpu --out gpu-verify

bench-gpu: $(STAMP)
	ZIPFAST_BUILD_CUDA=1 $(PY) -m pip install -q --no-deps --no-build-isolation -e .
	TRITON_INTERPRET=0 $(PY) -m pytest bench/test_gpu_*.py -q --benchmark-json=bench/results/gpu.json

# The documentation site (mkdocs.yml, docs/): mkdocs-material, the API reference by mkdocstrings from the
# docstrings (read statically); --strict turns every warning into an error. Output: site/.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) runs build site *.egg-info
