# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# `make test-fast` is the edit-test loop: every test but the slow, Ray, TVM and browser ones.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN ?= results/demo
DEMO_TRIALS ?= 24

.PHONY: demo test test-fast lint install clean-venv chromium postgresql

install: $(STAMP)

# (Re)install when the package metadata or the pinned versions change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[all]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/autoprune search --task digits --hw hw_profiles/cpu-onnxruntime.yaml \
		--space search_spaces/default.yaml --agent tpe --trials $(DEMO_TRIALS) --out $(RUN)

test: $(STAMP) chromium postgresql lint
	$(PY) -X faulthandler -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not ray and not tvm and not browser"

# ruff on the whole tree, mypy on the public API and the ground floor ([tool.mypy] in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check autoprune tests bench
	$(VENV)/bin/mypy

# The report test renders report.html in headless Chromium (Debian's `chromium`). Install it only
# where it is missing and we can (apt-get as root); elsewhere this does nothing and that test skips.
chromium:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium for the report rendering test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "chromium could not be installed; the report rendering test will skip"; \
	fi

# The team-database tests start a private PostgreSQL server (initdb/pg_ctl on a loopback port; Debian's
# `postgresql`). Install it only where it is missing and we can; elsewhere those tests skip.
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1 \
			&& command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing postgresql for the team-database tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
			|| echo "postgresql could not be installed; the team-database tests will skip"; \
	fi

clean-venv:
	rm -rf $(VENV)
