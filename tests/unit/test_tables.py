"""The pipeline declaration: check() refuses every flow that breaks its table's rules."""
import pytest

from controller.pipeline import cookies, tables
from controller.pipeline.flow import Flow, vid
from controller.pipeline.tables import PipelineError, check

LS = cookies.make('learning_switch', 0, 'test')
TOPO = cookies.make('topology', 1, 'test')


def test_tables_are_in_pipeline_order_with_unique_names_and_ids():
    ids = [t.id for t in tables.TABLES]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [t.name for t in tables.TABLES] == ['classify', 'learn', 'l2', 'flood', 'l3', 'ecmp']
    assert tables.FIRST == 'classify'
    assert tables.table_id('learn') == 10
    assert tables.table_name(20) == 'l2'
    assert tables.table_name(99) == 'table99'     # a stale table still gets a name


def test_a_flow_that_follows_the_rules_passes():
    check(Flow.make('classify', 100, {'in_port': 1, 'vlan_vid': 0}, [('push_vlan', 1)],
                    goto='learn', cookie=LS))
    check(Flow.make('l2', 100, {'vlan_vid': vid(10), 'eth_dst': '02:00:00:00:00:01'},
                    [('output', 1)], goto='flood', cookie=LS))
    check(Flow.make('classify', 1000, {'eth_type': 0x88cc}, [('output', 'controller')], cookie=TOPO))


def test_undeclared_table_is_refused():
    with pytest.raises(PipelineError, match="undeclared table 'acl'"):
        check(Flow.make('acl', 1, cookie=LS))


def test_match_field_not_declared_for_the_table_is_refused():
    with pytest.raises(PipelineError, match=r"table l2 does not allow match on \['in_port'\]"):
        check(Flow.make('l2', 100, {'in_port': 1, 'eth_dst': '02:00:00:00:00:01'}, cookie=LS))


def test_app_that_does_not_own_the_table_is_refused():
    with pytest.raises(PipelineError, match='app topology may not write table learn'):
        check(Flow.make('learn', 1, cookie=TOPO))
    with pytest.raises(PipelineError, match='app microseg may not write table l2'):
        check(Flow.make('l2', 1, cookie=cookies.make('microseg')))


def test_flow_without_an_app_cookie_is_refused():
    with pytest.raises(PipelineError, match='app None may not write table flood'):
        check(Flow.make('flood', 0, cookie=0))


@pytest.mark.parametrize('table,goto', [('l2', 'learn'), ('learn', 'learn'), ('flood', 'classify')])
def test_goto_backwards_or_to_itself_is_refused(table, goto):
    with pytest.raises(PipelineError, match='goto must go forward'):
        check(Flow.make(table, 0, goto=goto, cookie=LS))


def test_goto_unknown_table_is_refused():
    with pytest.raises(PipelineError, match='goto must go forward'):
        check(Flow.make('classify', 0, goto='tunnel_out', cookie=LS))
