# The two entry points named in README.md. Both create .venv from the project's own files.
#
# Install path (one, used by CI too): CPU torch 2.13.0 first (pip takes the local CPU wheel
# where the machine has one; elsewhere PyPI's build, which also runs on CPU), then the project
# with its `models`, `dev`, `serve`, `ray` and `train` extras pinned by constraints.txt, then sam2 built
# pure-Python without dependencies (its torchvision requirement would replace torch with a
# CUDA build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: setup chromium demo lint test clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) setuptools wheel torch==2.13.0
	$(PIP) -c constraints.txt -e ".[models,dev,serve,ray,train]"
	SAM2_BUILD_CUDA=0 $(PIP) -c constraints.txt --no-deps --no-build-isolation sam2
	touch $@

# Headless Chromium renders the HTML reports in tests/test_report.py: Debian's package, via apt
# where the machine has it (the test fails when apt is there but chromium is not, and skips,
# saying why, where there is no apt).
chromium:
	@command -v chromium >/dev/null || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium; }

setup: $(VENV)/.installed chromium

# Runs the agent on a bundled micro-world scene with mira-edit's default, the `micro` preset:
# the project's own learned editor (weights/micro-editor) makes the whole instruction in one
# call, the micro VLM (weights/micro-vlm) scores it and ends the run when it finds it done;
# otherwise the micro VLM with its planner adapter (weights/micro-planner) picks the next edit.
DEMO_INSTRUCTION := Change the pattern of the 2nd square shape counting from the left to a plain \
fill and let the square with polka dots be brown.
demo: setup
	$(BIN)/mira-edit examples/micro_scene.png "$(DEMO_INSTRUCTION)" \
		--out outputs/micro_scene_edited.png --force

# The machine-checked style (config in pyproject.toml): the layer contract, lint and import
# order, the format, and the type check of the public API and the graph.
lint: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright --project pyproject.toml

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) outputs .pytest_cache
