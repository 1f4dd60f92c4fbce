"""A hypervisor whose OpenFlow session drops (its ovs-vswitchd restarts, its management link
goes down) still has its VMs and its cable: no other switch may lose its flows toward them
(issue 7, part 6).  A physical switch whose session drops is kept for core.AWAY_GRACE."""
import time

from controller import core
from controller.core import Controller
from controller.inventory.model import Binding
from controller.policy.model import Policy
from tests.unit.builders import LEAF1, by_table
from tests.unit.test_core import MAC_WEB1, WEB1, acme, connect, hv1_on_leaf1_port3


def known(flows):
    """eth_dst -> flow of the known-nic entries (vlan_portgroups, priority 150)."""
    return {f.match_dict()['eth_dst']: f for f in by_table(flows, 'l2_lookup') if f.priority == 150}


def test_a_hypervisor_session_drop_keeps_every_flow_toward_its_vms(fabric):
    ctl = Controller(Policy(fabric).with_tenants([acme()]))
    _, hv_conn, hv = hv1_on_leaf1_port3(ctl, fabric)
    ctl.bindings_changed(hv, {2: Binding('tap-web1', WEB1, MAC_WEB1)})
    before = ctl.desired(LEAF1)
    assert MAC_WEB1 in known(before)
    ctl.switch_down(hv_conn)
    assert hv not in ctl.conns                              # not connected, and shown so
    assert ctl.inv.locations == {WEB1: (hv, 2)}             # its VM is still where it was
    assert ctl.desired(LEAF1) == before                     # the leaf keeps its flows toward it
    # it comes back (a restarted vswitchd): the new session replaces the old state
    again = connect(ctl, hv, [(1, 'int-to-phy', True), (2, 'tap-web1', True)])
    assert ctl.conns[hv] is again and ctl.desired(LEAF1) == before
    # what does move its nics still does: the binding goes (the VM was deleted meanwhile)
    ctl.switch_down(again)
    ctl.bindings_changed(hv, {})
    assert ctl.inv.locations == {} and MAC_WEB1 not in known(ctl.desired(LEAF1))


def test_a_physical_switch_session_drop_forgets_the_switch_only_after_a_grace(fabric):
    ctl = Controller(Policy(fabric).with_tenants([acme()]))
    leaf, _, _ = hv1_on_leaf1_port3(ctl, fabric)
    ctl.switch_down(leaf)
    assert LEAF1 in ctl.inv.switches and LEAF1 not in ctl.conns
    ctl._forget_away(time.monotonic() + core.AWAY_GRACE)
    assert LEAF1 not in ctl.inv.switches and LEAF1 not in ctl.conns
