"""The reconciler: only the difference between desired and installed is ever sent."""
import pytest

from controller.pipeline import cookies, registers as R
from controller.pipeline.flow import Flow, vid
from controller.pipeline.reconciler import Diff, Reconciler, diff

from tests.unit.builders import FakeSwitch

C = cookies.make('learning_switch', 2, 'test')


def l2(mac, port, **kw):
    kw.setdefault('cookie', C)
    return Flow.make('l2_lookup', 100, {'vlan_vid': vid(10), 'eth_dst': mac}, [('set_field', R.OUT_PORT, port)],
                     goto='acl_out', **kw)


A, B, D = '02:00:00:00:00:0a', '02:00:00:00:00:0b', '02:00:00:00:00:0d'
MISS = Flow.make('l2_lookup', 0, [], [('set_field', R.OUT_PORT, R.FLOOD)], goto='acl_out',
                 cookie=cookies.make('pipeline', 0, 'miss:l2_lookup'))


def test_unchanged_flows_produce_nothing():
    flows = {l2(A, 1), l2(B, 2), MISS}
    d = diff(flows, set(flows))
    assert d == Diff((), ())
    assert not d
    assert d.summary() == '+0 -0'


def test_new_flow_is_added_and_nothing_else_touched():
    d = diff({l2(A, 1), l2(B, 2)}, {l2(A, 1)})
    assert d.add == (l2(B, 2),)
    assert d.delete == ()


def test_changed_actions_replace_in_place_without_a_delete():
    d = diff({l2(A, 3)}, {l2(A, 1)})
    assert d.add == (l2(A, 3),)
    assert d.delete == ()          # an ADD with the same table/priority/match replaces it


def test_changed_cookie_or_timeouts_replace_in_place():
    for changed in (l2(A, 1, cookie=cookies.make('learning_switch', 2, 'other')),
                    l2(A, 1, cookie=cookies.make('learning_switch', 3, 'test')),
                    l2(A, 1, cookie=cookies.make('learning_switch', 2, 'test', tenant='acme')),
                    l2(A, 1, idle_timeout=300), l2(A, 1, hard_timeout=9), l2(A, 1, notify_removal=True)):
        d = diff({changed}, {l2(A, 1)})
        assert d.add == (changed,) and d.delete == (), changed


def test_a_cookie_that_only_moved_to_another_yaml_line_changes_nothing():
    here = l2(A, 1, cookie=cookies.make('learning_switch', 2, 'test', 'acme', where='acme.yaml:10'))
    moved = l2(A, 1, cookie=cookies.make('learning_switch', 2, 'test', 'acme', where='acme.yaml:42'))
    assert here == moved and not diff({moved}, {here})


def test_flow_no_longer_wanted_is_deleted():
    d = diff({l2(A, 1)}, {l2(A, 1), l2(B, 2)})
    assert d.delete == (l2(B, 2),)
    assert d.add == ()
    assert d.summary() == '+0 -1'


def test_masked_and_exact_matches_on_one_field_can_be_diffed():
    # a masked value is a (value, mask) tuple; mixing it with exact values must not crash sorting
    masked = Flow.make('l2_lookup', 100, {'eth_dst': ('01:00:00:00:00:00', '01:00:00:00:00:00')}, cookie=C)
    exact = Flow.make('l2_lookup', 100, {'eth_dst': A}, [('set_field', R.OUT_PORT, 1)], cookie=C)
    d = diff({masked, exact}, set())
    assert set(d.add) == {masked, exact}
    d = diff(set(), {masked, exact})
    assert set(d.delete) == {masked, exact}


# ---- Reconciler.converge against a fake switch ----------------------------------------------

def test_converge_reads_the_switch_once_and_sends_only_the_difference():
    sw = FakeSwitch(0x201, {l2(A, 1), l2(B, 2)})          # what the switch holds at connect
    rec = Reconciler()
    d = rec.converge(sw, {l2(A, 1), l2(B, 5), l2(D, 4)})
    assert sw.reads == 1
    assert sw.applied == [([], [l2(B, 5), l2(D, 4)])]
    assert d.summary() == '+2 -0'
    assert rec.installed(0x201) == {l2(A, 1), l2(B, 5), l2(D, 4)}


def test_converge_deletes_what_is_no_longer_wanted():
    sw = FakeSwitch(0x201, {l2(A, 1), l2(B, 2)})
    rec = Reconciler()
    rec.converge(sw, {l2(A, 1)})
    assert sw.applied == [([l2(B, 2)], [])]
    assert sw.flows == {l2(A, 1)}


def test_second_converge_with_the_same_desired_applies_nothing():
    sw = FakeSwitch(0x201)
    rec = Reconciler()
    want = {l2(A, 1), MISS}
    assert rec.converge(sw, want)
    assert len(sw.applied) == 1
    d = rec.converge(sw, set(want))
    assert not d
    assert len(sw.applied) == 1
    assert sw.reads == 1                                 # no re-read either


def test_dry_run_reports_the_diff_but_applies_nothing():
    sw = FakeSwitch(0x201, {l2(A, 1)})
    rec = Reconciler()
    d = rec.converge(sw, {l2(B, 2)}, dry_run=True)
    assert d.add == (l2(B, 2),) and d.delete == (l2(A, 1),)
    assert sw.applied == []
    assert rec.installed(0x201) == {l2(A, 1)}            # still what the switch holds
    assert rec.converge(sw, {l2(B, 2)}) == d             # the real run sends the same thing


def test_an_entry_the_switch_removed_itself_is_re_added_on_next_converge():
    aging = l2(A, 1, idle_timeout=300, notify_removal=True)
    sw = FakeSwitch(0x201)
    rec = Reconciler()
    rec.converge(sw, {aging, l2(B, 2)})
    rec.removed(0x201, aging.key)                        # idle timeout on the switch
    assert rec.installed(0x201) == {l2(B, 2)}
    rec.converge(sw, {aging, l2(B, 2)})
    assert sw.applied[-1] == ([], [aging])


def test_before_apply_sees_the_diff_first_and_only_when_something_is_sent():
    sw = FakeSwitch(0x201)
    rec = Reconciler()
    seen = []

    def before(d):
        seen.append((d, list(sw.applied)))
    d = rec.converge(sw, {l2(A, 1)}, before_apply=before)
    assert seen == [(d, [])]                             # called before the switch got anything
    rec.converge(sw, {l2(A, 1)}, before_apply=before)    # nothing to send
    rec.converge(sw, {l2(B, 2)}, dry_run=True, before_apply=before)
    assert len(seen) == 1


def test_an_entry_that_ages_out_while_its_bundle_is_in_flight_is_re_added_next_time():
    aging = l2(A, 1, idle_timeout=300, notify_removal=True)
    sw = FakeSwitch(0x201)
    rec = Reconciler()
    rec.converge(sw, {aging})

    class Racing(FakeSwitch):
        def apply(self, delete, add):
            rec.removed(0x201, aging.key)                # the flow-removed notice beats our reply
            super().apply(delete, add)
    racing = Racing(0x201)
    racing.flows = set(sw.flows)
    rec.converge(racing, {aging, l2(B, 2)})
    assert rec.installed(0x201) == {l2(B, 2)}            # not believed installed any more ...
    rec.converge(racing, {aging, l2(B, 2)})
    assert racing.applied[-1] == ([], [aging])           # ... so it is put back


def test_a_refused_apply_leaves_what_we_believe_installed_as_it_was():
    class Refusing(FakeSwitch):
        def apply(self, delete, add):
            raise RuntimeError('bundle rejected')
    sw = Refusing(0x201, {l2(A, 1)})
    rec = Reconciler()
    with pytest.raises(RuntimeError):
        rec.converge(sw, {l2(B, 2)})
    assert rec.installed(0x201) == {l2(A, 1)}


def test_removed_of_an_unknown_switch_or_key_is_harmless():
    rec = Reconciler()
    rec.removed(0x999, l2(A, 1).key)
    sw = FakeSwitch(0x201)
    rec.converge(sw, {l2(A, 1)})
    rec.removed(0x201, l2(B, 1).key)
    assert rec.installed(0x201) == {l2(A, 1)}


def test_forget_makes_the_next_converge_read_the_switch_again():
    sw = FakeSwitch(0x201)
    rec = Reconciler()
    rec.converge(sw, {l2(A, 1)})
    sw.flows.add(l2(B, 2))                               # someone added a flow behind our back
    rec.forget(0x201)
    assert rec.installed(0x201) is None
    rec.converge(sw, {l2(A, 1)})
    assert sw.reads == 2
    assert sw.applied[-1] == ([l2(B, 2)], [])


def test_switches_are_kept_apart():
    s1, s2 = FakeSwitch(0x201), FakeSwitch(0x202)
    rec = Reconciler()
    rec.converge(s1, {l2(A, 1)})
    rec.converge(s2, {l2(B, 2)})
    assert rec.installed(0x201) == {l2(A, 1)}
    assert rec.installed(0x202) == {l2(B, 2)}
    assert s1.applied == [([], [l2(A, 1)])] and s2.applied == [([], [l2(B, 2)])]


# ---- in sync: sending only what changed in the desired set ----------------------------------------

def test_a_switch_is_in_sync_after_a_converge_that_left_it_holding_exactly_the_desired_set():
    sw = FakeSwitch(0x201, {l2(D, 9)})
    rec = Reconciler()
    assert not rec.in_sync(0x201)
    rec.converge(sw, {l2(A, 1)})
    assert rec.in_sync(0x201) and sw.flows == {l2(A, 1)}
    rec.converge(sw, {l2(A, 1), l2(B, 2)}, in_sync=False)     # a converge that kept extra flows
    assert not rec.in_sync(0x201)
    rec.converge(sw, {l2(A, 1)})
    assert rec.in_sync(0x201)
    rec.converge(sw, {l2(B, 2)}, dry_run=True)              # a dry run changes nothing
    assert rec.in_sync(0x201) and rec.installed(0x201) == {l2(A, 1)}


@pytest.mark.parametrize('event', ['removed by the switch', 'read again', 'forgotten', 'a failed apply'])
def test_anything_unexpected_drops_a_switch_out_of_sync(event):
    sw = FakeSwitch(0x201)
    rec = Reconciler()
    rec.converge(sw, {l2(A, 1)})
    assert rec.in_sync(0x201)
    if event == 'removed by the switch':
        rec.removed(0x201, l2(A, 1).key)
    elif event == 'read again':
        rec.load(sw)
    elif event == 'forgotten':
        rec.forget(0x201)
    else:
        class Refusing(FakeSwitch):
            def apply(self, delete, add):
                raise RuntimeError('bundle rejected')
        with pytest.raises(RuntimeError):
            rec.converge_delta(Refusing(0x201), set(), {l2(B, 2)}, {l2(A, 1).key: l2(A, 1)}.get)
    assert not rec.in_sync(0x201)


def test_converge_delta_sends_only_what_left_and_entered_the_desired_set():
    sw = FakeSwitch(0x201)
    rec = Reconciler()
    rec.converge(sw, {l2(A, 1), l2(B, 2), MISS})
    reads = sw.reads
    # A moves to port 3 (same key: replaced in place, never deleted), B goes, D comes
    now = {l2(A, 3), l2(D, 4), MISS}
    wanted = {f.key: f for f in now}.get
    d = rec.converge_delta(sw, {l2(A, 1), l2(B, 2)}, {l2(A, 3), l2(D, 4)}, wanted)
    assert set(d.delete) == {l2(B, 2)} and set(d.add) == {l2(A, 3), l2(D, 4)}
    assert sw.applied[-1] == (list(d.delete), list(d.add))
    assert sw.flows == now and rec.installed(0x201) == now and sw.reads == reads      # no read
    assert rec.in_sync(0x201)
    # what is already there as wanted is not sent again; nothing to send sends nothing
    n = len(sw.applied)
    assert not rec.converge_delta(sw, set(), {l2(D, 4)}, wanted)
    assert len(sw.applied) == n


def test_an_entry_that_ages_out_during_a_delta_leaves_the_switch_out_of_sync():
    aging = l2(A, 1, idle_timeout=300, notify_removal=True)
    rec = Reconciler()

    class Racing(FakeSwitch):
        def apply(self, delete, add):
            rec.removed(0x201, aging.key)                # the flow-removed notice beats our reply
            super().apply(delete, add)
    sw = Racing(0x201)
    rec.converge(FakeSwitch(0x201), {aging})
    sw.flows = {aging}
    rec.converge_delta(sw, set(), {l2(B, 2)}, {aging.key: aging, l2(B, 2).key: l2(B, 2)}.get)
    assert rec.installed(0x201) == {l2(B, 2)}             # not believed installed any more ...
    assert not rec.in_sync(0x201)                         # ... so the next converge diffs everything
    rec.converge(sw, {aging, l2(B, 2)})
    assert sw.applied[-1] == ([], [aging])
