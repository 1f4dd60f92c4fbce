import pytest

from tests.unit.builders import example_fabric


@pytest.fixture
def fabric():
    """examples/fabric.yaml: 2 spines x 2 leaves, 4 hypervisors, native VLAN 1, trunks 10/20/30."""
    return example_fabric()
