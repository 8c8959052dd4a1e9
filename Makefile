# The README's two commands: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_DATA := data/demo
# Expanded once (:=), so the run and the message name the same folder.
ifndef DEMO_OUT
DEMO_OUT := runs/demo-$(shell date +%Y%m%d-%H%M%S)
endif

.PHONY: install demo demo-data test notebooks lint

install: $(INSTALLED)

$(INSTALLED): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(DEMO_DATA)/tfrecords-jpeg-32x32: | $(INSTALLED)
	$(BIN)/python -m petals.demo_data $(DEMO_DATA) --image-size 32

demo-data: $(DEMO_DATA)/tfrecords-jpeg-32x32

demo: $(INSTALLED) $(DEMO_DATA)/tfrecords-jpeg-32x32
	$(BIN)/python -m petals.runner notebooks/flowers.py $(DEMO_OUT) -f notebooks/demo.yaml \
		-p DATA_DIR $(abspath $(DEMO_DATA))
	@echo "demo outputs in $(DEMO_OUT)"

test: $(INSTALLED)
	$(BIN)/python -m pytest -q

notebooks: $(INSTALLED)
	$(BIN)/jupytext --to ipynb notebooks/*.py

lint: $(INSTALLED)
	$(BIN)/ruff check .
