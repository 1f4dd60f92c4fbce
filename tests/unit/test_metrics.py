"""controller/metrics.py: the hooks count, the collector reads the core's state at scrape time,
and the API serves /metrics without a token (and nothing else without one)."""
import socket
import urllib.error
import urllib.request

import pytest

from controller.pipeline.tables import table_id
from prometheus_client import REGISTRY

from controller import metrics
from controller.api import server
from controller.core import Controller
from controller.policy.errors import Diag, PolicyError
from tests.unit.builders import LEAF1, FakeSwitch


def value(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def ctl(fabric):
    c = Controller(fabric)
    yield c
    c.stop()


def test_reconcile_time_flows_per_table_and_connected_switches(ctl):
    conn = FakeSwitch(LEAF1)
    ctl.switch_up(conn, [(1, 'leaf1-eth1', True), (3, 'leaf1-eth3', True)])
    before = value('opendvs_reconcile_seconds_count', switch='leaf1')
    desired = ctl.desired(LEAF1)
    ctl.rec.converge(conn, desired)
    assert value('opendvs_reconcile_seconds_count', switch='leaf1') == before + 1
    per_table = {}
    for f in desired:
        per_table[f.table] = per_table.get(f.table, 0) + 1
    assert per_table and all(value('opendvs_flows', switch='leaf1', table=t) == n for t, n in per_table.items())
    assert value('opendvs_switches_connected', kind='physical') == 1
    assert value('opendvs_switches_connected', kind='hypervisor') == 0
    ctl.inv.macs[LEAF1] = {(10, '02:00:00:00:00:01'): 3, (10, '02:00:00:00:00:02'): 3}
    assert value('opendvs_learned_macs', switch='leaf1') == 2
    ctl.switch_down(conn)
    assert value('opendvs_switches_connected', kind='physical') == 0
    assert value('opendvs_flows', switch='leaf1', table=next(iter(per_table))) == 0     # gone with it


def test_packet_ins_flow_mods_and_bundles_by_switch(ctl):
    ctl.switch_up(FakeSwitch(LEAF1), [(1, 'leaf1-eth1', True)])
    pin = value('opendvs_packet_ins_total', switch='leaf1', table='learn', reason='no_match')
    metrics.packet_in(LEAF1, 0, table_id('learn'))
    metrics.packet_in(LEAF1, 0, table_id('learn'))
    metrics.packet_in(0xbeef, 1, table_id('port_sec'))      # a switch we do not know: by its dpid
    assert value('opendvs_packet_ins_total', switch='leaf1', table='learn', reason='no_match') == pin + 2
    assert value('opendvs_packet_ins_total', switch='%016x' % 0xbeef, table='port_sec', reason='action') >= 1
    adds, sent = value('opendvs_flow_mods_total', switch='leaf1', command='add'), \
        value('opendvs_bundles_total', switch='leaf1', result='sent')
    metrics.flow_mods(LEAF1, 2, 5, bundle=True)
    metrics.flow_mods(LEAF1, 0, 1, bundle=False)      # OpenFlow 1.3: no bundle
    metrics.bundle_rejected(LEAF1)
    assert value('opendvs_flow_mods_total', switch='leaf1', command='add') == adds + 6
    assert value('opendvs_bundles_total', switch='leaf1', result='sent') == sent + 1
    assert value('opendvs_bundles_total', switch='leaf1', result='rejected') >= 1


class _Service:
    @metrics.counted_apply
    def apply(self, pushed, dry_run=False):
        if pushed == 'bad':
            raise PolicyError([Diag('t.yaml', 1, 1, 'bad')])
        if pushed == 'switch':
            raise RuntimeError('switches not converged')
        return {'ok': True}

    @metrics.counted_apply
    def delete(self, name, dry_run=False):
        raise KeyError(name)


def test_applies_count_applied_rejected_and_failed():
    svc = _Service()
    base = {(r, d): value('opendvs_policy_applies_total', result=r, dry_run=d)
            for r in ('applied', 'rejected', 'failed') for d in ('true', 'false')}
    svc.apply([])
    svc.apply([], dry_run=True)
    svc.apply([], True)
    with pytest.raises(PolicyError):
        svc.apply('bad')
    with pytest.raises(RuntimeError):
        svc.apply('switch')
    with pytest.raises(KeyError):
        svc.delete('nobody')
    delta = {k: value('opendvs_policy_applies_total', result=k[0], dry_run=k[1]) - v for k, v in base.items()}
    assert delta == {('applied', 'false'): 1, ('applied', 'true'): 2, ('rejected', 'false'): 2,
                     ('rejected', 'true'): 0, ('failed', 'false'): 1, ('failed', 'true'): 0}


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_metrics_need_no_token_and_the_api_still_does(ctl):
    port = _free_port()
    httpd = server.serve(object(), 'secret', '127.0.0.1', port)
    try:
        denied = value('opendvs_api_requests_total', method='GET', path='/v1/tenants', status='401')
        with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port, timeout=10) as r:
            assert r.status == 200 and r.headers['Content-Type'].startswith('text/plain')
            text = r.read().decode()
        assert '# TYPE opendvs_packet_ins_total counter' in text
        assert '# TYPE opendvs_reconcile_seconds histogram' in text
        assert 'opendvs_switches_connected{kind="physical"}' in text
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen('http://127.0.0.1:%d/v1/tenants/acme' % port, timeout=10)
        assert e.value.code == 401
        assert value('opendvs_api_requests_total', method='GET', path='/v1/tenants', status='401') == denied + 1
    finally:
        httpd.shutdown()
