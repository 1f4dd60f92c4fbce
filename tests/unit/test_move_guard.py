from controller.pipeline.flow import Flow
from controller.pipeline.move_guard import move_guards

MAC = '02:00:00:77:00:01'


def _l2(port, priority=100, mac=MAC):
    return Flow.make('l2_lookup', priority, {'vlan_vid': 0x100a, 'eth_dst': mac},
                     [('set_field', 'reg15', port)], goto='acl_out')


def test_a_moved_mac_gets_an_ipv4_and_an_ipv6_guard_with_the_new_actions():
    new = _l2(2)
    g = move_guards([], [new], [_l2(5)])
    assert sorted(dict(x.match)['eth_type'] for x in g) == [0x0800, 0x86dd]
    for x in g:
        assert x.table == 'l2_lookup' and x.priority == 101
        assert dict(x.match)['nw_ttl'] == 0 and dict(x.match)['eth_dst'] == MAC
        assert (x.actions, x.goto) == (new.actions, new.goto)


def test_a_move_across_priorities_is_guarded_too():
    assert len(move_guards([_l2(5, 90)], [_l2(2, 100)], [_l2(5, 90)])) == 2


def test_no_guard_for_a_new_mac_an_unchanged_one_or_another_table():
    assert move_guards([], [_l2(2)], []) == []
    assert move_guards([], [_l2(2)], [_l2(2)]) == []
    assert move_guards([], [_l2(2, mac='02:00:00:77:00:09')], [_l2(5)]) == []
    acl = Flow.make('acl_out', 300, {'reg15': 5}, [], goto='output')
    assert move_guards([], [Flow.make('acl_out', 300, {'reg15': 5}, [], goto=None)], [acl]) == []


def test_an_ip_specific_entry_is_left_alone():
    old = Flow.make('l2_lookup', 100, {'eth_type': 0x0800, 'eth_dst': MAC}, [('set_field', 'reg15', 5)])
    new = Flow.make('l2_lookup', 100, {'eth_type': 0x0800, 'eth_dst': MAC}, [('set_field', 'reg15', 2)])
    assert move_guards([], [new], [old]) == []
