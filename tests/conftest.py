import importlib.util

import pytest

from tests.support import is_root

# tests/ryu runs under ryu-manager from its own virtualenv (`make test-ryu` builds .venv-ryu:
# ryu 4.34, no os-ken); any other run leaves it out.
collect_ignore = [] if importlib.util.find_spec('ryu') and not importlib.util.find_spec('os_ken') else ['ryu']


def pytest_collection_modifyitems(config, items):
    if is_root():
        return
    skip = pytest.mark.skip(reason='needs root (real OVS / Mininet)')
    for item in items:
        if any('tests/%s/' % d in str(item.fspath) for d in ('ovs', 'integration', 'ryu')):
            item.add_marker(skip)
