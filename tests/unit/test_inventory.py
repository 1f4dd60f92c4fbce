"""Where a nic is: Inventory.locations, kept from every hypervisor's bindings by bind/unbind/
relocate.  While a nic is bound on two hypervisors at once (a live migration) the place it
was first stays its location until that binding goes."""
from controller.inventory.model import Binding, Inventory

HV1, HV2, HV3 = 0xa1, 0xa2, 0xa3
WEB1, DB1 = 'acme/web1/nic0', 'acme/db1/nic0'


def tap(iface_id, mac='02:00:00:00:00:01'):
    return Binding('tap-' + iface_id.split('/')[1], iface_id, mac)


def test_a_bound_nic_is_located_on_its_hypervisor_port_and_unbinding_removes_it():
    inv = Inventory()
    assert inv.bind(HV1, {2: tap(WEB1), 3: tap(DB1)}) == {WEB1, DB1}
    assert inv.locations == {WEB1: (HV1, 2), DB1: (HV1, 3)}
    assert inv.bind(HV1, {2: tap(WEB1), 3: tap(DB1)}) == set()          # the same again: nothing moved
    assert inv.bind(HV1, {2: tap(WEB1)}) == {DB1}
    assert inv.locations == {WEB1: (HV1, 2)}
    assert inv.unbind(HV1) == {WEB1}
    assert inv.locations == {} and HV1 not in inv.bindings
    assert inv.unbind(HV1) == set()                                    # unknown hypervisor: harmless


def test_a_nic_bound_on_two_hypervisors_stays_where_it_was_until_it_goes_there():
    inv = Inventory()
    inv.bind(HV2, {2: tap(WEB1)})                                      # where it runs
    assert inv.bind(HV1, {5: tap(WEB1)}) == set()                      # the migration target, a lower dpid
    assert inv.locations == {WEB1: (HV2, 2)}                           # the first stays the location
    assert inv.bind(HV3, {4: tap(WEB1)}) == set()
    assert inv.locations == {WEB1: (HV2, 2)}
    assert inv.unbind(HV2) == {WEB1}                                    # it left the source ...
    assert inv.locations[WEB1] in {(HV1, 5), (HV3, 4)}                  # ... and is where it is bound now
    assert inv.locations[WEB1] == (HV1, 5)                              # (the lowest dpid, deterministically)
    assert inv.bind(HV1, {}) == {WEB1}
    assert inv.locations == {WEB1: (HV3, 4)}


def test_a_nic_that_moves_port_on_its_hypervisor_follows():
    inv = Inventory()
    inv.bind(HV1, {2: tap(WEB1)})
    assert inv.bind(HV1, {7: tap(WEB1)}) == {WEB1}
    assert inv.locations == {WEB1: (HV1, 7)}


def test_relocate_brings_locations_in_line_with_bindings_edited_by_hand():
    inv = Inventory()
    inv.bindings[HV1] = {2: tap(WEB1)}
    assert inv.locations == {}                                         # nobody told it yet
    assert inv.relocate() == {WEB1}
    assert inv.locations == {WEB1: (HV1, 2)}
    assert inv.relocate() == set()


def test_bind_keeps_its_own_copy_of_the_bindings():
    inv = Inventory()
    ports = {2: tap(WEB1)}
    inv.bind(HV1, ports)
    ports[3] = tap(DB1)
    assert inv.bindings[HV1] == {2: tap(WEB1)}
    assert DB1 not in inv.locations


def test_a_snapshot_carries_every_field_of_the_inventory():
    """Compilers read the snapshot: a field it forgot is state no flow ever shows (the shut
    ports of learning.violation were, at first)."""
    import dataclasses
    from controller.inventory.model import LinkEnd, Port, SwitchState
    sw = SwitchState(HV1, 'hv1', 'hypervisor')
    sw.ports[2] = Port(2, 'tap-web1', True, 'vm', since=0.0)
    end, far = LinkEnd(HV1, 1), LinkEnd(HV2, 1)
    inv = Inventory(switches={HV1: sw}, links={end: (far, 1.0)}, macs={HV1: {(1, '02:00:00:00:00:09'): 2}},
                    refused={HV1: {(1, '02:00:00:00:00:0a', 2)}}, shutdown={HV1: {2}}, hv_ports={end: HV1},
                    vtep_macs={HV1: '02:00:00:00:00:0b'}, locations={WEB1: (HV1, 2)}, claims={HV1: frozenset({DB1})},
                    refused_places={(DB1, HV1): 'why'}, declared={end: far}, open_at_once=frozenset({HV2}))
    inv.bindings = {HV1: {2: tap(WEB1)}}
    snap = inv.snapshot()
    for field in dataclasses.fields(Inventory):
        assert getattr(snap, field.name), 'the test sets every field: %s' % field.name
        if field.name == 'switches':
            assert snap.switches[HV1].ports == sw.ports
        else:
            assert getattr(snap, field.name) == getattr(inv, field.name), field.name
