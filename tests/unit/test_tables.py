"""The pipeline declaration: stages in order, miss flows generated from it, and check()
refusing every flow that breaks its table's rules (owner, band, matches, writes, next)."""
import pytest

from controller.pipeline import cookies, registers as R, tables
from controller.pipeline.flow import Flow, vid
from controller.pipeline.tables import PipelineError, check

LS = cookies.make('learning_switch', 0, 'test')
TOPO = cookies.make('topology', 1, 'test')
INGRESS = ['port_sec', 'classify', 'learn', 'storm_ctl', 'punt', 'arp_rsp', 'acl_in', 'l3', 'ecmp', 'l2_lookup']
EGRESS = ['acl_out', 'output', 'flood']


def test_tables_are_in_pipeline_order_with_unique_names_and_ids():
    ids = [t.id for t in tables.TABLES]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [t.name for t in tables.TABLES] == INGRESS + EGRESS
    assert tables.FIRST == 'port_sec'
    assert tables.table_id('learn') == 20
    assert tables.table_name(60) == 'l2_lookup'
    assert tables.table_name(99) == 'table99'     # a stale table still gets a name


def test_choosing_the_destination_and_emitting_are_separate_stages():
    # l2_lookup may only load the out-port register; only output/flood may send
    assert tables.BY_NAME['l2_lookup'].sets == {R.OUT_PORT, 'tun_ipv4_dst'}
    assert tables.BY_NAME['l2_lookup'].next == ('acl_out',)
    assert tables.BY_NAME['acl_out'].next == ('output',)
    with pytest.raises(PipelineError, match='may not write'):
        check(Flow.make('l2_lookup', 100, {'vlan_vid': vid(10), 'eth_dst': '02:00:00:00:00:01'},
                        [('pop_vlan',), ('output', 1)], cookie=LS))


def test_every_table_gets_exactly_one_generated_miss_flow():
    misses = tables.miss_flows()
    zero = [f for f in misses if f.priority == 0]
    assert sorted(f.table for f in zero) == sorted(t.name for t in tables.TABLES)
    by = {f.table: f for f in zero}
    assert by['port_sec'].actions == () and by['port_sec'].goto is None                # drop
    assert by['learn'].actions == (('output', 'controller'),) and by['learn'].goto == 'arp_rsp'
    assert by['l2_lookup'].actions == (('set_field', R.OUT_PORT, R.FLOOD),) and by['l2_lookup'].goto == 'acl_out'
    assert by['acl_in'].goto == 'l3' and by['l3'].goto == 'l2_lookup'
    flood = [f for f in misses if f.priority == 1]
    assert [(f.table, f.match_dict(), f.goto) for f in flood] == [('output', {R.OUT_PORT: R.FLOOD}, 'flood')]
    for f in misses:
        check(f)
        assert cookies.app_of(f.cookie) == 'pipeline'


def test_a_flow_that_follows_the_rules_passes():
    check(Flow.make('port_sec', 100, {'in_port': 1, 'vlan_vid': 0}, [('push_vlan', 1)],
                    goto='classify', cookie=LS))
    check(Flow.make('l2_lookup', 100, {'vlan_vid': vid(10), 'eth_dst': '02:00:00:00:00:01'},
                    [('set_field', R.OUT_PORT, 1)], goto='acl_out', cookie=LS))
    check(Flow.make('output', 100, {R.OUT_PORT: 1, 'vlan_vid': vid(10)}, [('pop_vlan',), ('output', 1)], cookie=LS))
    check(Flow.make('port_sec', 1000, {'eth_type': 0x88cc}, [('output', 'controller')], cookie=TOPO))


def test_undeclared_table_is_refused():
    with pytest.raises(PipelineError, match="undeclared table 'acl'"):
        check(Flow.make('acl', 1, cookie=LS))


def test_match_field_not_declared_for_the_table_is_refused():
    with pytest.raises(PipelineError, match=r"table l2_lookup does not allow match on \['in_port'\]"):
        check(Flow.make('l2_lookup', 100, {'in_port': 1, 'eth_dst': '02:00:00:00:00:01'}, cookie=LS))


def test_app_that_does_not_own_the_table_is_refused():
    with pytest.raises(PipelineError, match='app topology may not write table learn'):
        check(Flow.make('learn', 100, cookie=TOPO))
    with pytest.raises(PipelineError, match='app microseg may not write table l2_lookup'):
        check(Flow.make('l2_lookup', 1, cookie=cookies.make('microseg')))


def test_an_app_writes_only_inside_its_priority_band():
    with pytest.raises(PipelineError, match='outside its band 150..150'):
        check(Flow.make('l2_lookup', 100, {'vlan_vid': vid(10), 'eth_dst': '02:00:00:00:00:01'},
                        [('set_field', R.OUT_PORT, 1)], goto='acl_out', cookie=cookies.make('vlan_portgroups', 1)))
    with pytest.raises(PipelineError, match='outside its band'):
        check(Flow.make('flood', 0, cookie=LS))        # priority 0 is the pipeline's miss


def test_flow_without_an_app_cookie_is_refused():
    with pytest.raises(PipelineError, match='app None may not write table flood'):
        check(Flow.make('flood', 0, cookie=0))


@pytest.mark.parametrize('table,goto', [('l2_lookup', 'learn'), ('learn', 'learn'), ('flood', 'port_sec'),
                                        ('port_sec', 'l2_lookup')])
def test_goto_backwards_to_itself_or_skipping_a_stage_is_refused(table, goto):
    with pytest.raises(PipelineError, match='may not go to %s' % goto):
        check(Flow.make(table, 100, goto=goto, cookie=LS))


def test_goto_unknown_table_is_refused():
    with pytest.raises(PipelineError, match='may not go to tunnel_out'):
        check(Flow.make('port_sec', 100, goto='tunnel_out', cookie=LS))
