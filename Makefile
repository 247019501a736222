# Two commands do everything on a fresh machine:
#   make demo   set up, compile the bundled examples, fit the 1-D example, print its integral
#   make test   set up and run the whole test suite
# torch is pinned here only (a CPU wheel); pyproject keeps torch>=2.3 so GPU users keep their build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TRITON_SPEC ?= triton==3.8.0
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: setup demo test test-fast golden bench bench-triton ptxas gpu-prepare gpu-check lint ct oned render clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TRITON_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[torch,apps,test]"
	touch $(STAMP)

demo: setup
	@for spec in examples/*.yaml; do $(VENV)/bin/autoint-compile "$$spec" -o $(OUT)/examples || exit 1; done
	$(VENV)/bin/autoint-compile train-1d --signal poly --out $(OUT)/oned

# one torch thread per pytest worker: two workers on two cores, no oversubscription
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 -q -p no:cacheprovider

# the inner loop: everything but the long end-to-end runs (marked @pytest.mark.slow)
test-fast: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 -q -p no:cacheprovider -m "not slow"

# regenerate the golden files (IR text and generated torch modules of the core examples); review the diff
golden: setup
	AUTOINT_UPDATE_GOLDEN=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_golden_cli.py -k golden

lint: setup
	$(VENV)/bin/ruff check autoint_compiler tests benchmarks

bench: setup
	$(PY) -m benchmarks.run

# the Triton backend: GPU timings (needs CUDA) and, on any machine, ptxas's report for sm_90
bench-triton: setup
	$(PY) -m benchmarks.triton_bench

# ptxas's report (registers, spills) for the kernels and block configurations the modules ship, sm_90, no GPU needed
ptxas: setup
	$(PY) -m benchmarks.triton_ptxas --shipped --widths 64,128 --vars 1,2,3 --precisions tf32x3,bf16 --out benchmarks/results/gpu/ptxas

# the GPU step: generate the modules here, then run the checks and the timing table (needs CUDA; on a
# GPU machine with only torch and triton, copy .gpu/ there and run benchmarks/gpu_check.sh)
gpu-prepare: setup
	$(PY) -m benchmarks.gpu_check --prepare .gpu

gpu-check: gpu-prepare
	bash benchmarks/gpu_check.sh .gpu $(OUT)/gpu

oned: setup
	$(VENV)/bin/autoint-compile train-1d --signal all --out $(OUT)/oned

ct: setup
	$(VENV)/bin/autoint-compile ct --out $(OUT)/ct

render: setup
	$(VENV)/bin/autoint-compile render --quick --out $(OUT)/render

clean:
	rm -rf $(OUT) .pytest_cache .hypothesis
