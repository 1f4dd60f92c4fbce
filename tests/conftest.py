import pytest

from tests.support import is_root


def pytest_collection_modifyitems(config, items):
    if is_root():
        return
    skip = pytest.mark.skip(reason='needs root (real OVS / Mininet)')
    for item in items:
        if 'tests/ovs/' in str(item.fspath) or 'tests/integration/' in str(item.fspath):
            item.add_marker(skip)
