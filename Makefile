# The two entry points named in README.md. Both create .venv from the project's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"

# Runs the agent on the bundled example with the dry-run preset (test doubles, not real models).
demo: setup
	$(BIN)/mira-edit examples/shapes.png "make the left side red, then make the right side blue" \
		--preset dry-run --out outputs/shapes_edited.png --force

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) outputs .pytest_cache
