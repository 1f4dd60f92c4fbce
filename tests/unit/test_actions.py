"""Typed actions: one normal form per action, and malformed ones refused at compile time."""
import pytest

from controller.pipeline import actions as A
from controller.pipeline import fields as F
from controller.pipeline import ofctl_text, tables
from controller.pipeline.actions import ActionError
from controller.pipeline.flow import Flow

T = [t.name for t in tables.TABLES]


# ---- constructors give one normal form ---------------------------------------------------------

def test_a_register_load_of_bits_is_a_masked_set_field():
    assert A.load('reg13[0..15]', 5) == ('set_field', 'reg13', (5, 0xffff))
    assert A.load('reg0[16..31]', 7) == ('set_field', 'reg0', (0x70000, 0xffff0000))
    assert A.load('reg1[3]', 1) == ('set_field', 'reg1', (8, 8))
    assert A.load('reg13', 5) == A.set_field('reg13', 5) == ('set_field', 'reg13', 5)   # whole field: no mask


def test_set_field_values_take_the_form_ovs_reads_back():
    assert A.set_field('eth_src', '02:AA:00:00:00:01') == ('set_field', 'eth_src', '02:aa:00:00:00:01')
    assert A.set_field('reg3', 0xab, 0xffffffff) == ('set_field', 'reg3', 0xab)     # all-ones mask dropped
    assert A.set_field('reg3', 0xabc, 0xff) == ('set_field', 'reg3', (0xbc, 0xff))  # bits outside the mask cleared


def test_subfields_have_one_spelling():
    assert A.move('reg0[0..31]', 'reg1') == ('move', 'reg0', 'reg1')
    assert A.move('eth_src', 'eth_dst') == ('move', 'eth_src', 'eth_dst')   # what today's apps write
    assert A.move('reg0[0..15]', 'reg4[16..31]') == ('move', 'reg0[0..15]', 'reg4[16..31]')
    assert F.subfield('reg0[7]') == ('reg0', 7, 1)


def test_ct_options_come_in_one_order_with_defaults_left_out():
    a = A.ct(zone='reg13', table=T[-1], commit=True, exec=[A.set_field('ct_mark', 1)])
    assert a == ('ct', ('commit', True), ('zone', 'reg13[0..15]'), ('table', T[-1]),
                 ('exec', (('set_field', 'ct_mark', 1),)))
    assert A.ct(zone=0) == ('ct',)
    assert A.ct(nat=True) == ('ct', ('nat', ()))
    assert A.ct(zone='reg13[0..15]') == A.ct(zone='reg13')


def test_nat_ranges_of_one_value_are_written_as_that_value():
    assert A.nat('dst', ('10.0.0.5', '10.0.0.5'), (80, 80)) == A.nat('dst', '10.0.0.5', 80)
    assert A.nat('src', ['10.0.0.1', '10.0.0.9'], persistent=True) == (
        ('kind', 'src'), ('ip', ('10.0.0.1', '10.0.0.9')), ('persistent', True))


def test_learn_specs():
    a = A.learn(T[-1], [A.learn_match('reg11'), A.learn_match('eth_dst', 'eth_src'),
                        A.learn_load('in_port', 'reg15'), A.learn_match('eth_type', 0x800),
                        A.learn_load(1, 'reg0[0]'), A.learn_output('reg14[0..31]')], hard_timeout=300)
    assert dict(a[1:])['specs'] == (('match', 'reg11', 'reg11'), ('match', 'eth_dst', 'eth_src'),
                                    ('load', 'in_port', 'reg15'), ('match', 'eth_type', 0x800),
                                    ('load', 1, 'reg0[0]'), ('output', 'reg14'))
    assert dict(a[1:])['priority'] == A.LEARN_DEFAULT_PRIORITY
    assert A.learn_match('ipv4_dst', '10.0.0.1') == ('match', 'ipv4_dst', 0x0a000001)   # immediates are ints
    A.check(a)


def test_actions_are_hashable_and_flows_built_two_ways_are_equal():
    a = Flow.make(T[0], 10, {'eth_type': 0x800}, [A.ct(commit=True, zone='reg13', exec=[A.set_field('ct_mark', 1)])])
    b = Flow.make(T[0], 10, {'eth_type': 0x800}, [('ct', ('commit', True), ('zone', 'reg13[0..15]'),
                                                   ('exec', (('set_field', 'ct_mark', 1),)))])
    assert a == b and hash(a) == hash(b)


# ---- typed matches ------------------------------------------------------------------------------

def test_typed_match_values_take_the_form_ovs_reads_back():
    f = Flow.make(T[0], 10, {'ct_state': '+trk+est-rpl', 'ipv4_dst': '10.1.2.0/24', 'ipv4_src': '10.9.9.9/32',
                             'reg14': (0x1f, 0xf0), 'metadata': (5, F.ones(64)),
                             'eth_dst': ('01:00:5E:00:00:00', 'ff:ff:ff:80:00:00')})
    assert f.match_dict() == {'ct_state': (0x22, 0x2a), 'ipv4_dst': ('10.1.2.0', '255.255.255.0'),
                              'ipv4_src': '10.9.9.9', 'reg14': (0x10, 0xf0), 'metadata': 5,
                              'eth_dst': ('01:00:5e:00:00:00', 'ff:ff:ff:80:00:00')}
    assert ofctl_text.match(f).startswith('ct_state=+est-rpl+trk,')


def test_bad_ct_state_flags_are_refused():
    with pytest.raises(F.FieldError, match='unknown ct_state flag'):
        F.ct_state('+trk+established')
    with pytest.raises(F.FieldError, match='bad ct_state'):
        F.ct_state('trk')


# ---- check refuses malformed actions, saying why -----------------------------------------------

@pytest.mark.parametrize('action,message', [
    (('output',), 'wrong number of arguments for output'),
    (('output', 0), 'output port must be an int'),
    (('output', 'flood'), 'output port'),
    (('push_vlan', 4095), 'push_vlan vid'),
    (('output_reg', 'xxreg0'), 'at most 32 bits'),
    (('output_reg', 'reg15[0..31]'), "written 'reg15'"),
    (('teleport', 1), "unknown action kind 'teleport'"),
    ('output', 'an action is a tuple'),
    (('set_field', 'eth_colour', 1), "unknown field 'eth_colour'"),
    (('set_field', 'reg0', 1 << 32), 'does not fit in reg0'),
    (('set_field', 'reg0', (0x1ff, 0xff)), 'leaves value bits outside'),
    (('set_field', 'reg0', (1, 0)), 'mask 0x0 is empty'),
    (('set_field', 'eth_src', 'AA:BB:CC:DD:EE:FF'), 'write'),
    (('set_field', 'ct_mark', 1), 'only inside ct'),
    (('set_field', 'ct_state', 1), 'ct_state cannot be set'),
    (('move', 'reg0[0..15]', 'reg1'), 'move copies 16 bits into 32'),
    (('move', 'reg0[0..40]', 'xxreg0[0..40]'), 'outside reg0'),
    (('move', 'reg0[0..31]', 'reg1'), 'write it as'),
    (A.resubmit('no_such_table'), "resubmit table 'no_such_table' is not a declared table"),
    (A.conjunction(1, 3, 2), 'clause'),
    (A.conjunction(1, 1, 1), 'n_clauses'),
    (A.write_metadata(0x1ff, 0xff), 'bits outside mask'),
    (A.meter(0), 'meter id'),
    (A.ct(table='nowhere'), "ct table 'nowhere'"),
    (A.ct(zone='reg13[0..7]'), 'ct zone from a field takes 16 bits'),
    (A.ct(zone=70000), 'ct zone must be'),
    (A.ct(commit=True, exec=[A.set_field('reg0', 1)]), 'ct exec takes only set_field of ct_mark/ct_label'),
    (A.ct(exec=[A.set_field('ct_mark', 1)]), 'ct exec needs commit'),
    (('ct', ('zone', 5), ('commit', True)), 'in the order'),
    (('ct', ('colour', 'red')), 'keys'),
    (A.ct(commit=True, nat=A.nat(port=80)), 'nat port range needs an address'),
    (A.ct(commit=True, nat=A.nat('sideways', '10.0.0.1')), "nat kind is 'src' or 'dst'"),
    (A.ct(commit=True, nat=A.nat('src', '10.0.0.1', hash=True, random=True)), 'exclude'),
    (A.learn(T[0], []), 'at least one spec'),
    (A.learn('nowhere', [A.learn_match('reg11')]), "learn table 'nowhere'"),
    (A.learn(T[0], [('match', 'eth_dst', 'reg0')]), 'differ in width'),
    (A.learn(T[0], [('load', 1 << 20, 'reg0[0..15]')]), 'learn load immediate'),
    (A.learn(T[0], [('copy', 'reg0', 'reg1')]), 'a learn spec is'),
])
def test_check_refuses_malformed_actions_with_a_clear_message(action, message):
    with pytest.raises(ActionError, match=message.replace('(', r'\(').replace('[', r'\[')):
        A.check(action)


def test_malformed_subfield_text_is_refused_by_the_constructor():
    with pytest.raises(F.FieldError, match='bad subfield'):
        A.move('reg0[a..b]', 'reg1')
    with pytest.raises(ActionError, match='does not fit'):
        A.load('reg0[0..3]', 16)


@pytest.mark.parametrize('acts,message', [
    ([A.output(1), A.meter(3)], 'meter is an instruction'),
    ([A.write_metadata(1), A.output(1)], 'write_metadata is an instruction'),
    ([A.conjunction(1, 1, 2), A.output(1)], 'conjunction'),
])
def test_instructions_must_sit_where_openflow_runs_them(acts, message):
    with pytest.raises(ActionError, match=message):
        A.check_list(acts)


def test_well_formed_lists_pass():
    A.check_list([A.meter(3), A.load('reg13[0..15]', 5), A.resubmit(T[0]), A.dec_ttl(),
                  A.ct(commit=True, zone='reg13', table=T[-1], nat=A.nat('src', '10.0.0.1', (1024, 2047)),
                       exec=[A.set_field('ct_mark', 1), A.set_field('ct_label', 1 << 100)]),
                  A.move('reg14', 'reg15'), A.output('controller'), A.write_metadata(0x20, 0xf0)])
    A.check_list([A.conjunction(7, 1, 2), A.conjunction(8, 2, 2)])


def test_ofctl_text_writes_an_add_flows_line():
    f = Flow.make(T[0], 100, {'eth_type': 0x800, 'reg13': 5}, [A.dec_ttl(), A.output(2)], T[1],
                  cookie=0x77, idle_timeout=30, notify_removal=True)
    assert ofctl_text.flow(f) == ('table=%d,priority=100,cookie=0x77,idle_timeout=30,send_flow_rem,'
                                  'eth_type=0x800,reg13=0x5,actions=dec_ttl,output:2,goto_table:%d'
                                  % (tables.table_id(T[0]), tables.table_id(T[1])))


@pytest.mark.parametrize('match,also,message', [
    ({'ipv4_dst': '10.0.0.1'}, (), 'ipv4_dst needs a match on eth_type=0x800'),
    ({'eth_type': 0x0800, 'tcp_dst': 80}, (), 'tcp_dst needs a match on ip_proto=6'),
    ({'eth_type': 0x0806, 'ip_proto': 6}, (), 'ip_proto needs a match on eth_type=0x800 or 0x86dd'),
    ({'arp_tpa': '10.0.0.1'}, (), 'arp_tpa needs a match on eth_type=0x806'),
    ({}, ('ipv4_src',), 'ipv4_src needs'),                 # set_field has the same prerequisites
    ({'colour': 1}, (), "unknown field 'colour'"),
])
def test_matches_without_their_prerequisites_are_refused(match, also, message):
    with pytest.raises(F.FieldError, match=message):
        F.check_match(match, also)


def test_check_flow_names_the_flow():
    f = Flow.make(T[0], 10, {'eth_type': 0x0806}, [A.set_field('ipv4_dst', '10.0.0.1')])
    with pytest.raises(F.FieldError, match=r'ipv4_dst needs .*table=%s' % T[0]):
        A.check_flow(f)
    A.check_flow(Flow.make(T[0], 10, {'eth_type': 0x0800, 'ip_proto': 17, 'udp_dst': 53},
                           [A.set_field('ipv4_dst', '10.0.0.1'), A.output(1)]))


@pytest.mark.parametrize('value,message', [
    ((0x5, 0x5), 'not one run of bits'),
    ((1, 1 << 100 | 1), 'not one run'),
    ((1 << 70, F.ones(72)), 'at most 64 bits'),
])
def test_masked_loads_must_be_one_run_of_at_most_64_bits(value, message):
    with pytest.raises(ActionError, match=message):
        A.check(('set_field', 'xxreg0', value))


def test_bad_addresses_are_refused():
    with pytest.raises(F.FieldError, match='not a field value'):
        F.to_int('ipv4_src', '10.0.1.300')
