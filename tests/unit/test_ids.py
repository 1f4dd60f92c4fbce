"""Stable ids: never change while their owner exists, survive restarts, are not reused
while flows may carry them, and adding tenant B never changes a number of tenant A."""
import json

import pytest

from controller.pipeline import ids as idstore
from controller.pipeline.ids import IdStore
from controller.policy.model import Policy
from tests.unit.builders import make_tenant


def policy(fabric, *tenants):
    return Policy(fabric).with_tenants(tenants)


ACME = lambda: make_tenant('acme', {'users': 10, 'servers': {'vni': 5020}})       # noqa: E731
FIRST = lambda: make_tenant('aaa', {'ov': {'vni': 1}, 'lan': 30})                  # noqa: E731


def test_adding_a_tenant_whose_vni_sorts_first_changes_no_id_of_another(fabric):
    store = IdStore()
    before = idstore.bind(store, policy(fabric, ACME()))
    after = idstore.bind(store, policy(fabric, ACME(), FIRST()))
    for space in ('tenant', 'zone', 'network', 'overlay_vlan'):
        old, new = getattr(before, space), getattr(after, space)
        assert {k: v for k, v in new.items() if k in old} == dict(old), space
    assert after.overlay_vlan[('aaa', 'ov')] != after.overlay_vlan[('acme', 'servers')]


def test_overlay_vlans_count_down_from_4094_and_avoid_every_fabric_vlan(fabric):
    got = idstore.bind(IdStore(), policy(fabric, ACME(), FIRST()))
    taken = set(fabric.all_vlans()) | {10, 30}
    assert set(got.overlay_vlan.values()) <= set(range(2, 4095)) - taken
    assert max(got.overlay_vlan.values()) == 4094


def test_ids_survive_a_restart(tmp_path, fabric):
    store = IdStore(tmp_path)
    first = idstore.bind(store, policy(fabric, FIRST(), ACME()))
    store.save()
    again = idstore.bind(IdStore(tmp_path), policy(fabric, ACME()))        # restarted without aaa
    assert again.overlay_vlan[('acme', 'servers')] == first.overlay_vlan[('acme', 'servers')]
    assert again.tenant['acme'] == first.tenant['acme']


def test_a_released_id_is_not_reused_until_every_switch_has_converged(fabric):
    store = IdStore()
    a = idstore.bind(store, policy(fabric, FIRST()))
    idstore.bind(store, policy(fabric))                                      # aaa deleted
    b = idstore.bind(store, policy(fabric, make_tenant('bbb', {'ov': {'vni': 7}})))
    assert b.overlay_vlan[('bbb', 'ov')] != a.overlay_vlan[('aaa', 'ov')]   # quarantined
    assert b.zone['bbb'] != a.zone['aaa']


def test_allocation_never_hands_out_a_number_twice():
    store = IdStore()
    got = [store.get('zone', 'z%d' % i) for i in range(1000)]
    assert len(set(got)) == 1000
    store.release('zone', 'z5')
    assert store.get('zone', 'new') not in got


def test_a_full_space_is_an_error_not_a_reuse():
    store = IdStore()
    for i in range(4093):
        store.get('overlay_vlan', 'n%d' % i)
    with pytest.raises(idstore.IdSpaceFull):
        store.get('overlay_vlan', 'one-too-many')


def test_an_overlay_vlan_that_a_trunk_now_uses_moves():
    store = IdStore()
    v = store.get('overlay_vlan', 'acme/servers')
    assert store.get('overlay_vlan', 'acme/servers', avoid=frozenset({v})) != v


def test_a_corrupt_store_is_reported_with_its_path(tmp_path):
    (tmp_path / 'ids.json').write_text(json.dumps({'ids': 'nonsense'}))
    with pytest.raises(ValueError, match='ids.json is corrupt'):
        IdStore(tmp_path)


def test_a_dry_run_copy_allocates_without_touching_the_store(fabric):
    store = IdStore()
    idstore.bind(store, policy(fabric, ACME()))
    idstore.bind(store.copy(), policy(fabric, ACME(), FIRST()))
    assert store.peek('tenant', 'aaa') is None


def test_the_journal_replays_and_folds_into_the_snapshot(tmp_path):
    store = IdStore(tmp_path)
    for i in range(10):
        store.get('owner', 'o%d' % i)
        store.note(0x100 + i, 'a.yaml:%d' % i)
        store.save()                                 # one journal append each, no rewrite
    assert not (tmp_path / 'ids.json').exists()
    store.release('owner', 'o3')
    store.save()
    again = IdStore(tmp_path)
    assert again.peek('owner', 'o9') == store.peek('owner', 'o9') and again.peek('owner', 'o3') is None
    assert again.notes[0x105] == 'a.yaml:5'
    assert again.get('owner', 'new') not in {store.peek('owner', 'o%d' % i) for i in range(10)} | {4}
    for i in range(1200):                            # past the fold threshold
        again.get('owner', 'x%d' % i)
    again.save()
    assert (tmp_path / 'ids.json').exists() and (tmp_path / 'ids.log').stat().st_size == 0
    third = IdStore(tmp_path)
    assert third.names('owner') == again.names('owner')


def test_a_torn_last_journal_line_is_ignored_and_a_corrupt_one_reported(tmp_path):
    store = IdStore(tmp_path)
    store.get('tenant', 'acme')
    store.save()
    with open(tmp_path / 'ids.log', 'a') as f:
        f.write('["id", "tenant", "glo')                   # the crash came mid-write
    assert IdStore(tmp_path).peek('tenant', 'acme') == 1
    (tmp_path / 'ids.log').write_text('["id", "tenant", "acme", 1, 2]\nnot json\n["settled"]\n')
    with pytest.raises(ValueError, match=r'ids.log:2'):
        IdStore(tmp_path)
