"""bench/peers.py's generated configurations and its README section (no network, no peers)."""
import os
import sys

import pytest
import yaml

from controller.policy.errors import PolicyError
from controller.policy.fabric import parse_fabric

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'bench'))
import peers_ctl  # noqa: E402
import peers_table  # noqa: E402


def tree_ctx(tmp_path):
    """Mininet's tree depth 2 fanout 4 as the harness numbers it: pbs1 the root (ports 1-4 to
    pbs2..pbs5), each leaf port 1 up and ports 2-5 to hosts."""
    switches = [peers_ctl.SwitchInfo('pbs1', 1, [1, 2, 3, 4])]
    switches += [peers_ctl.SwitchInfo('pbs%d' % n, n, [1, 2, 3, 4, 5]) for n in range(2, 6)]
    links = [('pbs1', 'pbs%d' % n) for n in range(2, 6)]
    return peers_ctl.Ctx(workdir=str(tmp_path), switches=switches, links=links)


def test_fabric_for_the_tree_is_one_opendvs_loads(tmp_path):
    fabric = parse_fabric(peers_ctl.fabric_yaml(6653, tree_ctx(tmp_path)))
    assert sorted(fabric.switches) == ['pbs%d' % n for n in range(1, 6)]
    assert fabric.switches['pbs3'].dpid == 3
    assert len(fabric.links) == 4


def test_fabric_names_the_cables_ports_when_the_topology_knows_them(tmp_path):
    ctx = tree_ctx(tmp_path)
    ctx.links = [('pbs1', 'pbs%d' % n, n - 1, 1) for n in range(2, 6)]      # root port n-1 <-> leaf port 1
    fabric = parse_fabric(peers_ctl.fabric_yaml(6653, ctx))
    assert fabric.link_ports[('pbs1', 'pbs3')] == (2, 1)
    assert len(fabric.links) == 4


def test_fabric_with_a_link_to_an_unknown_switch_is_refused(tmp_path):
    ctx = tree_ctx(tmp_path)
    ctx.links.append(('pbs1', 'pbs9'))
    with pytest.raises(PolicyError):
        parse_fabric(peers_ctl.fabric_yaml(6653, ctx))


def test_faucet_yaml_one_vlan_on_every_port(tmp_path):
    doc = yaml.safe_load(peers_ctl.faucet_yaml(tree_ctx(tmp_path)))
    assert doc['vlans'] == {'bench': {'vid': 100}}
    assert sorted(doc['dps']) == ['pbs%d' % n for n in range(1, 6)]
    assert doc['dps']['pbs4']['dp_id'] == 4
    assert doc['dps']['pbs4']['interfaces'] == {p: {'native_vlan': 'bench'} for p in range(1, 6)}
    capped = yaml.safe_load(peers_ctl.faucet_yaml(tree_ctx(tmp_path), {'max_hosts': 4096}, {'max_hosts': 4096}))
    assert capped['vlans']['bench']['max_hosts'] == 4096
    assert capped['dps']['pbs1']['interfaces'][1] == {'native_vlan': 'bench', 'max_hosts': 4096}


def _run(controller, converge, rounds=1, hwm=None, pktin=None):
    return {'controller': controller, 'topo': 'tree', 'topo_desc': 'tree', 'tag': controller, 'errors': [],
            'converge_s': converge, 'pingall_rounds': [{}] * rounds, 'ctrl_vmhwm_mib': hwm,
            'vswitchd_cpu_s_run': 7.0, 'burst': {'flows_added': 10, 'ctrl_pktin': pktin,
                                                  'vswitchd_cpu_s': 1.0, 'probe': {'rtt_max_ms': 5.0}}}


DOC = {'facts': {'hostname': 'box', 'load_average_start': '0.50 0.40 0.30'},
       'controllers': ['standalone', 'opendvs'], 'started': '2026-12-01 23:00',
       'finished': '2026-12-01 23:10', 'repeats': {'tree': 3, 'linear': 0},
       'results': [_run('standalone', 0.7), _run('standalone', 0.9), _run('standalone', 0.8),
                   _run('opendvs', 3.8, rounds=5, hwm=70.0, pktin=200)]}


def test_readme_section_replaced_in_place_and_nothing_else(tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('# Benchmarks\n\nkept before\n')
    peers_table.update_readme(DOC, str(readme))
    first = readme.read_text()
    assert first.startswith('# Benchmarks\n\nkept before\n')
    assert '| net.start → first 0%-loss pingall (s) | 0.80 | 3.80 (5 rounds) |' in first
    assert '| controller peak RSS (MiB) | — | 70 |' in first       # no controller, no RSS
    assert 'load average at the start 0.50 0.40 0.30' in first
    readme.write_text(first + '\n## Later section\n\nkept after\n')
    doc = dict(DOC, started='2026-12-02 01:00')
    peers_table.update_readme(doc, str(readme))
    second = readme.read_text()
    assert second.count(peers_table.BEGIN) == 1 and second.count(peers_table.SECTION) == 1
    assert '2026-12-02 01:00' in second and '2026-12-01 23:00' not in second
    assert second.endswith('## Later section\n\nkept after\n')
