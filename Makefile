# The two commands of the README.  Both set up what is missing first (apt packages, the OVS
# daemons for the userspace datapath, the virtualenv) and are quick when it is all there.
PY      := .venv/bin/python
PYTEST  := $(PY) -m pytest
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup demo test test-ryu unit ovs integration bench bench-peers-setup bench-peers

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) scripts/demo.py --fabric examples/fabric.yaml

test: setup
	$(PYTEST) -q -p no:cacheprovider tests/unit tests/ovs tests/integration
	@$(MAKE) --no-print-directory test-ryu

# The same controller under ryu-manager (ryu 4.34), from its own virtualenv .venv-ryu (no os-ken).
test-ryu: setup
	@bash scripts/setup_ryu.sh
	.venv-ryu/bin/python -m pytest -q -p no:cacheprovider tests/ryu

unit: setup
	$(PYTEST) -q -p no:cacheprovider tests/unit

ovs: setup
	$(PYTEST) -q -p no:cacheprovider tests/ovs

integration: setup
	$(PYTEST) -q -p no:cacheprovider tests/integration

bench: setup
	$(PY) bench/convergence.py
	$(PY) bench/apply.py
	$(PY) bench/binding.py
	$(PY) bench/overlay.py
	$(PY) bench/compile.py
	$(PY) bench/routing.py
	$(PY) bench/bonds.py
	$(PY) bench/microseg.py --big
	$(PY) bench/dataplane.py
	$(PY) bench/trace.py
	$(PY) bench/migration.py
	$(PY) bench/push.py --osken
	flock /tmp/opendvs-lab.lock $(PY) bench/restarts_runs.py 3
	flock /tmp/opendvs-lab.lock $(PY) bench/floods_runs.py 3
	@$(MAKE) --no-print-directory bench-peers

# Issue 11 part 7: opendvs side by side with OVS NORMAL, Ryu 4.34 and Faucet 1.10.12 on the same
# Mininet topologies, one run (bench/results/peers.json, the table in bench/README.md).  The peers
# live in their own virtualenvs, bench/.venv-ryu (scripts/setup_ryu.sh) and bench/.venv-faucet.
# Takes the lab lock itself: do not run `make bench` under flock /tmp/opendvs-lab.lock.
bench-peers-setup: setup
	$(PY) bench/peers.py setup

bench-peers: bench-peers-setup
	flock /tmp/opendvs-lab.lock $(PY) bench/peers.py suite
