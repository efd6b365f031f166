# Hostvisor: set up a Debian 12 machine (as root), build the venv, lint, type-check, test, run.
#
#   make test           deps + venv, then ruff, mypy and pytest
#   make unit           the fast ring of unit tests only (pure code; seconds)
#   make run ARGS=...   deps + venv, then `hostvisor serve ARGS`
#   make lint | types | bench | clean
#
# Every target is safe to run again: a second run skips apt, the venv and pip.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
MAKEFLAGS += --no-print-directory

# Exactly Debian's interpreter: its python3-sanlock is importable only from it.
PYTHON := /usr/bin/python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.hostvisor-installed
STAMPS := .stamps
APT_UPDATE_STAMP := $(STAMPS)/apt-update
# Minutes after which `apt-get update` runs again before an install (it only runs at all
# when a package is missing).
APT_UPDATE_MAX_AGE := 1440
TYPECHECK := .typecheck

ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

APT_PACKAGES := \
	qemu-system-x86 qemu-utils \
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev \
	pkg-config gcc python3-dev python3-venv \
	sanlock python3-sanlock libsanlock-dev \
	docker.io busybox-static iptables iproute2 \
	mount e2fsprogs \
	fence-agents openssh-server lldpd prometheus sosreport libvirt-sanlock \
	python3-cryptography ovmf swtpm swtpm-tools glusterfs-server glusterfs-client \
	systemd

.PHONY: all deps venv test unit lint types typecheck-tree pytest run bench clean

all: test

# -- machine ------------------------------------------------------------------------------

deps:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
		status=$$(dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null || true); \
		[ "$$status" = "install ok installed" ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" -ne 0 ]; then \
			echo "deps: missing Debian packages:$$missing (run make as root)" >&2; exit 1; \
		fi; \
		echo "deps: installing$$missing"; \
		mkdir -p $(STAMPS); \
		if [ -z "$$(find $(APT_UPDATE_STAMP) -mmin -$(APT_UPDATE_MAX_AGE) 2>/dev/null)" ]; then \
			apt-get update && touch $(APT_UPDATE_STAMP); \
		fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends $$missing \
		|| { apt-get update && touch $(APT_UPDATE_STAMP) \
		     && apt-get install -y --no-install-recommends $$missing; }; \
	fi
	@# libvirt's QEMU driver refuses to start without these (see shared/ENVIRONMENT.md).
	@need_root() { [ "$$(id -u)" -eq 0 ] || { echo "deps: $$1 (run make as root)" >&2; exit 1; }; }; \
	getent group kvm >/dev/null || { need_root "group kvm is missing"; groupadd -r kvm; }; \
	getent group libvirt-qemu >/dev/null || { need_root "group libvirt-qemu is missing"; groupadd -r libvirt-qemu; }; \
	id libvirt-qemu >/dev/null 2>&1 || { need_root "user libvirt-qemu is missing"; \
		useradd -r -g kvm -G libvirt-qemu -M -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu; }

# -- venv ---------------------------------------------------------------------------------

venv: $(VENV_STAMP)

# Order-only on deps: the phony target runs (cheaply) first but never forces a reinstall;
# only a changed pyproject.toml does.
$(VENV_STAMP): pyproject.toml | deps
	@if [ -d $(VENV) ] && ! { grep -qx 'home = /usr/bin' $(VENV)/pyvenv.cfg \
		&& grep -qx 'include-system-site-packages = true' $(VENV)/pyvenv.cfg; } 2>/dev/null; then \
		echo "venv: $(VENV) was not made by $(PYTHON) --system-site-packages; remaking it"; \
		rm -rf $(VENV); \
	fi
	[ -x $(VENV_PY) ] || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(VENV_PY) -m pip install --quiet --upgrade pip 'setuptools>=68' wheel
	$(VENV_PY) -m pip install --quiet -e '.[test,lint]'
	touch $@

# -- checks -------------------------------------------------------------------------------

test: deps venv lint types pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The code folders are installed as hostvisor.* through package-dir mapping; the editable
# install's import hook is invisible to mypy, so mypy reads the namespace from a generated
# tree of symlinks (hostvisor has no __init__.py: it is a namespace package).
typecheck-tree:
	@mkdir -p $(TYPECHECK)/hostvisor
	@for pkg in actors supervision api; do \
		ln -sfn ../../$$pkg $(TYPECHECK)/hostvisor/$$pkg; \
	done

# Paths in mypy's report are shown as in the work tree (supervision/x.py, not .typecheck/...).
types: venv typecheck-tree
	MYPYPATH=$(TYPECHECK) $(VENV)/bin/mypy -p hostvisor | sed 's#^$(TYPECHECK)/hostvisor/##'

# pytest's exit status 5 means it collected no test: that is a failure here. (The pytest
# script, not `python -m pytest`, so that the work tree is not on sys.path.)
pytest: venv
	@rc=0; $(VENV)/bin/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# The fast ring: pure modules only (budget, codec, verb binding, metadata, parsers).
unit: venv
	$(VENV)/bin/pytest -q -m unit -p no:cacheprovider $(PYTEST_ARGS)

# -- run ----------------------------------------------------------------------------------

run: deps venv
	exec $(VENV)/bin/hostvisor serve $(ARGS)

bench: venv
	@shopt -s nullglob; benches=(tests/benchmarks/bench_*.py); \
	[ $${#benches[@]} -gt 0 ] || { echo "no benchmarks in tests/benchmarks" >&2; exit 1; }; \
	for bench in "$${benches[@]}"; do \
		echo "== $$bench"; $(VENV_PY) "$$bench" $(BENCH_ARGS); \
	done

clean:
	rm -rf $(VENV) $(TYPECHECK) $(STAMPS) .tox build dist *.egg-info \
		.pytest_cache .mypy_cache .ruff_cache
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

# Debian's sos finds a plugin by its file in its plugins package (`sos report -o hostvisor`).
SOS_PLUGINS ?= $(shell /usr/bin/python3 -c 'import sos.report.plugins as p; print(p.__path__[0])' 2>/dev/null)
.PHONY: install-sos-plugin
install-sos-plugin:
	install -D -m 0644 contrib/sos/hostvisor.py $(DESTDIR)$(SOS_PLUGINS)/hostvisor.py
