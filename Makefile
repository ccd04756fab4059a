# od2 set-up contract: `make demo` and `make test` work on a fresh clone (they create .venv themselves).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OD2 := $(VENV)/bin/od2
STAMP := $(VENV)/.od2-installed
DEMO_CONFIG := configs/digits/retinanet_lite0.yaml
DEMO_OUT := output/demo

.PHONY: install demo test test-slow bench clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision first, plainly with pip: it finds the local wheels this machine kind ships
	$(PY) -m pip install --quiet "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(OD2) train --config $(DEMO_CONFIG) --overwrite OUTPUT_DIR=$(DEMO_OUT)
	$(OD2) eval --config $(DEMO_CONFIG) --weights $(DEMO_OUT)/model_final.pth --vis 8 OUTPUT_DIR=$(DEMO_OUT)

# pytest's exit 5 (no tests collected) is a failure: a selection that matches nothing has tested nothing.
run_pytest = $(PY) -m pytest -q $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The suite without the tests marked slow (pyproject's addopts deselect them, as for a plain `pytest`).
test: install
	$(call run_pytest,)

# Only the tests marked slow: long end-to-end runs (CI's second step).
test-slow: install
	$(call run_pytest,-m slow)

bench: install
	$(OD2) bench
	$(PY) benchmarks/cpu_speed.py
	$(PY) benchmarks/head_norms.py
	$(PY) benchmarks/data_throughput.py
	$(PY) benchmarks/arch_speed.py

clean-demo:
	rm -rf $(DEMO_OUT)
