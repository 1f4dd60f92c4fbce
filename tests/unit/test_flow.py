"""Flow values: one normal form, so equal flows compare, hash and print equal."""
import pytest

from controller.pipeline.flow import UNTAGGED, Flow, vid


def test_vid_sets_the_present_bit():
    assert vid(10) == 0x100a
    assert vid(4094) == 0x1ffe
    assert UNTAGGED == 0


def test_match_is_sorted_by_field_whatever_the_dict_order():
    f = Flow.make('l2_lookup', 100, {'vlan_vid': vid(10), 'eth_dst': '02:00:00:00:00:01'})
    assert f.match == (('eth_dst', '02:00:00:00:00:01'), ('vlan_vid', 0x100a))


def test_macs_are_lower_cased_in_matches_including_masked_ones():
    f = Flow.make('learn', 100, {'eth_src': 'AA:BB:CC:DD:EE:0F',
                                 'eth_dst': ('01:00:5E:00:00:00', 'FF:FF:FF:80:00:00')})
    assert f.match_dict() == {'eth_src': 'aa:bb:cc:dd:ee:0f',
                              'eth_dst': ('01:00:5e:00:00:00', 'ff:ff:ff:80:00:00')}


def test_non_mac_fields_are_left_alone():
    f = Flow.make('port_sec', 0, {'in_port': 3, 'eth_type': 0x88cc})
    assert f.match_dict() == {'in_port': 3, 'eth_type': 0x88cc}


def test_actions_become_tuples_of_tuples():
    f = Flow.make('l2_lookup', 100, actions=[['pop_vlan'], ('output', 3)])
    assert f.actions == (('pop_vlan',), ('output', 3))
    assert Flow.make('l2_lookup', 100).actions == ()     # no actions: drop


def test_same_flow_written_two_ways_is_equal_and_hashes_equal():
    a = Flow.make('l2_lookup', 100, {'vlan_vid': vid(10), 'eth_dst': '02:00:00:00:00:AA'},
                  [('output', 3)], cookie=7)
    b = Flow.make('l2_lookup', 100, {'eth_dst': '02:00:00:00:00:aa', 'vlan_vid': 0x100a},
                  (('output', 3),), cookie=7)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


@pytest.mark.parametrize('change', [
    dict(actions=[('output', 4)]), dict(cookie=8), dict(idle_timeout=300), dict(goto='flood'),
    dict(hard_timeout=5), dict(notify_removal=True)])
def test_any_other_difference_makes_a_different_flow_with_the_same_key(change):
    base = dict(actions=[('output', 3)], cookie=7)
    a = Flow.make('l2_lookup', 100, {'vlan_vid': vid(10)}, **base)
    b = Flow.make('l2_lookup', 100, {'vlan_vid': vid(10)}, **{**base, **change})
    assert a != b
    assert a.key == b.key == ('l2_lookup', 100, (('vlan_vid', 0x100a),))


def test_key_differs_by_table_priority_or_match():
    f = Flow.make('l2_lookup', 100, {'vlan_vid': vid(10)})
    assert f.key != Flow.make('flood', 100, {'vlan_vid': vid(10)}).key
    assert f.key != Flow.make('l2_lookup', 101, {'vlan_vid': vid(10)}).key
    assert f.key != Flow.make('l2_lookup', 100, {'vlan_vid': vid(20)}).key


def test_flows_are_frozen():
    f = Flow.make('l2_lookup', 100)
    with pytest.raises(AttributeError):
        f.priority = 1


def test_str_reads_like_a_dump_flows_line():
    f = Flow.make('learn', 100, {'in_port': 3, 'vlan_vid': vid(10), 'eth_src': '02:00:00:00:00:01'},
                  goto='l2_lookup', cookie=0x0101000012345678, idle_timeout=300)
    assert str(f) == ('table=learn priority=100 cookie=0x101000012345678 '
                      'eth_src=02:00:00:00:00:01,in_port=3,vlan_vid=0x100a idle_timeout=300 '
                      'actions=goto:l2_lookup')


def test_str_of_a_catch_all_drop_and_of_actions():
    assert str(Flow.make('flood', 0)) == 'table=flood priority=0 cookie=0x0 * actions=drop'
    f = Flow.make('port_sec', 100, {'in_port': 2, 'vlan_vid': UNTAGGED},
                  [('push_vlan', 1)], goto='learn')
    assert str(f) == ('table=port_sec priority=100 cookie=0x0 in_port=2,vlan_vid=0 '
                      'actions=push_vlan:1,goto:learn')
    masked = Flow.make('l2_lookup', 5, {'eth_dst': ('01:00:00:00:00:00', '01:00:00:00:00:00')},
                       [('output', 'controller')])
    assert 'eth_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=output:controller' in str(masked)


def test_str_of_a_flow_with_a_cookie_value_names_its_app_tenant_owner_and_yaml_line():
    from controller.pipeline import cookies
    f = Flow.make('l2_lookup', 150, {'vlan_vid': vid(10), 'eth_dst': '02:00:00:00:00:01'},
                  [('set_field', 'reg15', 2)], goto='acl_out',
                  cookie=cookies.make('vlan_portgroups', 2, 'web1/nic0', 'acme', where='acme.yaml:12'))
    assert str(f) == ('table=l2_lookup priority=150 '
                      'cookie=(vlan_portgroups kind=2 tenant=acme owner=web1/nic0 at acme.yaml:12) '
                      'eth_dst=02:00:00:00:00:01,vlan_vid=0x100a actions=set_field:reg15:2,goto:acl_out')
