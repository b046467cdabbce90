# Two entry points: `make demo` (the main job on the embedded default model) and `make test`.
# Each creates .venv if missing and installs the package with the pinned constraints.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[onnx,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m fpa_export.demo --outdir out/demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out build *.egg-info
