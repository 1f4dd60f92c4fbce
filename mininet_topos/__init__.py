"""The opendvs lab: hypervisors with their own OVS, leaf/spine switches and VMs in Mininet.

Python API for tests (`Lab`), the `opendvs-lab` CLI (cli.py) and a `topos` dict for
`mn --custom mininet_topos/topo.py --topo opendvs,fabric=FILE` (topo.py).
"""
from mininet_topos.errors import LabError
from mininet_topos.lab import Lab, NicInfo, VMInfo
from mininet_topos.osutil import free_tcp_port, wait_until
from mininet_topos.plan import NicSpec, VMSpec, default_vms, tenant_vms

__all__ = ['Lab', 'LabError', 'NicInfo', 'NicSpec', 'VMInfo', 'VMSpec', 'default_vms',
           'free_tcp_port', 'tenant_vms', 'wait_until']
