"""/metrics on a real OVS leaf/spine mesh: scraped without a token, in Prometheus text format,
and its numbers move with traffic (packet-ins, learned MACs) and with policy pushes (applies,
flow-mods, bundles, API requests), while refused pushes count as rejected."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.ovs.scratch import ScratchFabric
from tests.support import ControllerProcess, free_port, scrape, total, wait_until

PHYSICAL = ('spine1', 'spine2', 'leaf1', 'leaf2')
TENANT = '''tenant: acme
networks:
  users: {vlan: 10, subnet: 10.10.0.0/24}
workloads:
  web1: {hypervisor: hv1, nics: [{network: users, mac: "02:00:0a:0a:00:0b", ip: 10.10.0.11}]}
'''


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp('metrics')
    with ScratchFabric(work, free_port()) as fab:
        ctl = ControllerProcess(fab.fabric, work).start()
        try:
            ctl.wait_connected(len(PHYSICAL))
            yield fab, ctl, work
        finally:
            ctl.stop()


def test_switches_flows_and_reconciles_are_visible(lab):
    fab, ctl, _ = lab
    m = wait_until(lambda: (lambda s: s if total(s, 'opendvs_switches_connected', kind='physical') == 4
                            and total(s, 'opendvs_flows', switch='leaf1', table='flood') else None)(scrape(ctl)),
                   30, what='4 physical switches connected and programmed')
    for sw in PHYSICAL:
        assert total(m, 'opendvs_flows', switch=sw) > 0
        assert total(m, 'opendvs_reconcile_seconds_count', switch=sw) >= 1
        assert total(m, 'opendvs_flow_mods_total', switch=sw, command='add') >= total(m, 'opendvs_flows', switch=sw)
        assert total(m, 'opendvs_bundles_total', switch=sw, result='sent') >= 1
    assert total(m, 'opendvs_switches_connected', kind='hypervisor') == 0
    assert total(m, 'opendvs_bundles_total', result='rejected') == 0
    assert total(m, 'process_resident_memory_bytes') > 0          # prometheus_client's own


def test_traffic_moves_packet_ins_and_learned_macs(lab):
    fab, ctl, _ = lab
    before = scrape(ctl)
    wait_until(lambda: fab.ping('h1', '10.99.0.2'), 30, what='h1 -> h2')
    after = wait_until(lambda: (lambda s: s if total(s, 'opendvs_learned_macs', switch='leaf2') >= 2 else None)(
        scrape(ctl)), 10, what='leaf2 learned h1 and h2')
    assert total(after, 'opendvs_learned_macs', switch='leaf1') >= 2
    learned = total(after, 'opendvs_packet_ins_total', table='learn') - total(before, 'opendvs_packet_ins_total',
                                                                             table='learn')
    assert learned >= 2                       # h1's and h2's first frames, at least on their leaves
    assert total(after, 'opendvs_packet_ins_total', table='port_sec') > 0      # LLDP all along
    # the reason is OpenFlow's: OVS reports the learn table's miss entry as a table miss, the
    # LLDP entry of classify as an action
    assert total(after, 'opendvs_packet_ins_total', table='learn', reason='no_match') == \
        total(after, 'opendvs_packet_ins_total', table='learn')
    assert total(after, 'opendvs_packet_ins_total', table='port_sec', reason='action') > 0


def test_applies_and_api_requests_count_accepted_and_refused_pushes(lab, tmp_path):
    fab, ctl, _ = lab
    good, bad = tmp_path / 'acme.yaml', tmp_path / 'bad.yaml'
    good.write_text(TENANT)
    bad.write_text(TENANT.replace('vlan: 10', 'vlan: 99'))         # not on hv1's trunk: refused
    before = scrape(ctl)
    r = ctl.dvsctl('apply', str(good))
    assert r.returncode == 0, r.stderr
    r = ctl.dvsctl('apply', str(bad))
    assert r.returncode == 1
    after = scrape(ctl)

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)
    assert delta('opendvs_policy_applies_total', result='applied', dry_run='false') == 1
    assert delta('opendvs_policy_applies_total', result='rejected', dry_run='false') == 1
    assert delta('opendvs_policy_applies_total', result='failed') == 0
    assert delta('opendvs_api_requests_total', method='POST', path='/v1/apply', status='200') == 1
    assert delta('opendvs_api_requests_total', method='POST', path='/v1/apply', status='400') == 1
    # VLAN 10 is now in use: the fabric cables carry it, in one bundle per switch
    assert delta('opendvs_flow_mods_total', command='add') > 0
    assert delta('opendvs_bundles_total', result='sent') >= len(PHYSICAL)
    assert delta('opendvs_reconcile_seconds_count') >= len(PHYSICAL)


def test_only_metrics_is_open_without_the_token(lab):
    _, ctl, _ = lab
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen('http://127.0.0.1:%d/v1/flows' % ctl.api_port, timeout=10)
    assert e.value.code == 401
    assert total(scrape(ctl), 'opendvs_api_requests_total', path='/v1/flows', status='401') >= 1
