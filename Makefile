# Two entry points for a fresh machine (see README.md):
#   make demo   set up .venv (torch, the compiled instancenorm kernels, styler) and run styler on the bundled samples
#   make test   the test suite (what CI runs, through .ci/run)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the releases this project is built and measured with.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
KERNEL_SOURCES := setup.py pyproject.toml $(wildcard instancenorm/csrc/*.h instancenorm/csrc/*.cpp instancenorm/csrc/*/*.cpp instancenorm/csrc/*/*.cu)

.PHONY: setup demo test check-grad clean

setup: $(VENV)/.installed

$(VENV)/.installed: $(KERNEL_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PINS) ninja
	# --no-build-isolation: the extension compiles against the torch installed above.
	$(BIN)/pip install --no-build-isolation --editable '.[test]'
	$(BIN)/python -m instancenorm
	touch $@

check-grad: setup
	$(BIN)/styler check-grad

# Proves the kernels, then stylizes the bundled samples with every shipped model (samples/stylized/).
demo: setup
	$(BIN)/styler check-grad
	for name in $$($(BIN)/styler models --json | $(BIN)/python -c "import json, sys; print(*(m['name'] for m in json.load(sys.stdin)))"); do \
	    $(BIN)/styler stylize samples/*.jpg --model $$name --output-dir samples/stylized --overwrite || exit 1; \
	done

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf build $(VENV) instancenorm/*.so *.egg-info
