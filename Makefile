# The README's two commands: `make demo` and `make test`. Both install what they need first.
# While writing code: `make test-fast` (unit tests) and `make lint`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_DATA := data/demo
PAIRED_NOTEBOOKS := $(patsubst %.py,%.ipynb,$(wildcard notebooks/*.py))
# Expanded once (:=), so the run and the message name the same folder.
ifndef DEMO_OUT
DEMO_OUT := runs/demo-$(shell date +%Y%m%d-%H%M%S)
endif

.PHONY: install demo demo-data test test-fast notebooks lint

# The pinned packages, this project installed in editable mode (petals and kit import from this
# checkout wherever a kernel starts: papermill --cwd, Jupyter in any folder), and the paired
# notebooks that papermill and Jupyter open.
install: $(INSTALLED) $(PAIRED_NOTEBOOKS)

$(INSTALLED): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt --editable .
	touch $@

# Written again only when the .py is newer (saving in Jupyter updates both).
notebooks/%.ipynb: notebooks/%.py | $(INSTALLED)
	$(BIN)/jupytext --to ipynb $<

# The held-out labels are the last file the generator writes: a dataset from before they
# existed is refused by the generator with a line saying to delete it.
DEMO_FILES := $(DEMO_DATA)/tfrecords-jpeg-32x32/test_labels.csv

$(DEMO_FILES): | $(INSTALLED)
	$(BIN)/python -m kit.demo_data $(DEMO_DATA) --image-size 32

demo-data: $(DEMO_FILES)

# notebooks/demo.yaml holds every demo parameter, DATA_DIR (data/demo) included.
demo: $(INSTALLED) $(DEMO_FILES)
	$(BIN)/python -m kit.runner notebooks/flowers.py $(DEMO_OUT) -f notebooks/demo.yaml
	@echo "demo outputs in $(DEMO_OUT) (open notebook.html in a browser)"

# Two workers (one per core); one line per test as it ends, and the slowest ones at the end.
# The slowest start first (tests/conftest.py orders them by the last run's seconds; xdist keeps
# that order), and the tests that share one notebook execution (an xdist_group) run on one
# worker, so that it runs once.
test: $(INSTALLED)
	$(BIN)/python -m pytest -n 2 --dist loadgroup --no-loadscope-reorder -v --durations=15

# The unit tests alone, in one process: no notebook runs, no training, no child processes,
# no fake-Kaggle contract tests. The loop of writing code.
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -q -m "not slow and not contract" --durations=5

notebooks: $(PAIRED_NOTEBOOKS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The notebook's smoke tests, and the built kernel run as Kaggle runs it, on the versions Kaggle's
# TPU image installs (Python 3.12, tensorflow-cpu 2.20.0, JAX 0.7, no efficientnet), in their own
# environment: with the newest Keras by default, or with KAGGLE_KERAS=3.13.2 (the oldest the kit
# supports, petals.install.MINIMUM_KERAS) in an environment of its own. The kernel test needs
# a writable /kaggle (Kaggle's paths): sudo mkdir /kaggle && sudo chown $$USER /kaggle.
# Kaggle's image has no petals installed (a built kernel carries its own copy), so neither has
# this environment: the notebook's kernels find the checkout on PYTHONPATH, which the built
# kernel's test removes (a module the kernel failed to carry must not be found here instead).
PYTHON312 ?= python3.12
KAGGLE_KERAS ?=
KAGGLE_VENV := .venv-kaggle$(if $(KAGGLE_KERAS),-keras$(KAGGLE_KERAS))

$(KAGGLE_VENV)/.installed: requirements-kaggle.txt
	test -x $(KAGGLE_VENV)/bin/python || $(PYTHON312) -m venv $(KAGGLE_VENV)
	$(KAGGLE_VENV)/bin/pip install --quiet --upgrade pip
	$(KAGGLE_VENV)/bin/pip install --quiet -r requirements-kaggle.txt \
		$(if $(KAGGLE_KERAS),keras==$(KAGGLE_KERAS))
	touch $@

.PHONY: test-kaggle-image
test-kaggle-image: $(KAGGLE_VENV)/.installed
	PYTHONPATH=$(CURDIR) PETALS_KAGGLE_IMAGE=1 $(KAGGLE_VENV)/bin/python -m pytest -q \
		tests/test_notebook.py tests/test_augment.py tests/test_feed.py tests/test_accelerator.py tests/test_mixing.py \
		tests/test_train.py "tests/test_kernels.py::test_the_built_kernel_runs_as_kaggle_runs_it"
