"""Which capabilities (apps/*.py) run, and what they need: framework-free.

Ryu users compose a controller by naming apps:

    ryu-manager controller.ofp apps.learning_switch apps.topology

controller/ofp.py gives every module of apps/ a small app class (see capability() there)
that, when the framework instantiates it, writes its name into the one shared app context,
Capabilities below; the OpenFlow front end (controller.ofp's OpenDVSApp) builds the one core
from it.  Named nothing but controller.ofp, every registered app runs.

The context class lives here, not in controller/ofp.py, because ryu-manager never loads a
module that holds a context class as an app (its dpset hack): `controller.ofp` named after a
capability would silently be skipped.

Dependencies: an app whose flows do nothing without another's is given it, the way
ryu-manager loads an app's _REQUIRED_APP: implicitly, with a log line saying why.
"""
from __future__ import annotations

import logging

from controller.pipeline import cookies

LOG = logging.getLogger('opendvs.capabilities')

# app -> the apps whose flows it needs on the switches
REQUIRES = {
    # physical ports open only once topology's LLDP flows have found the cables
    'learning_switch': ('topology',),
    # known-nic entries ride learning_switch's admission, classify, output and flood stages
    'vlan_portgroups': ('learning_switch',),
    # VM ports are admitted by learning_switch; tunnels cross the fabric over the routed underlay
    'vxlan_overlay': ('learning_switch', 'underlay_routing'),
    # routed frames are delivered by the port-groups' and overlays' destination entries
    'anycast_gateway': ('vlan_portgroups', 'vxlan_overlay'),
    # rules act on the stages learning_switch sets up (classify's tenant and zone registers)
    'microseg': ('learning_switch',),
    # the leaves find their hypervisors' ports through topology
    'underlay_routing': ('topology',),
    # frames a VM may send go on to learning_switch's classify, with its admission's VLAN
    'port_security': ('learning_switch',),
}


class CapabilityError(ValueError):
    pass


def available() -> tuple[str, ...]:
    """Every registered app that has a module in apps/, in the registry's order."""
    from controller.core import load_apps
    return tuple(m.APP for m in load_apps())


def resolve(names=None) -> tuple[str, ...]:
    """The apps that run when `names` are asked for (None or empty: all of them), with
    their dependencies added (logged), in the registry's order.  An unknown name is a
    CapabilityError naming the known ones."""
    known = available()
    if not names:
        return known
    names = [n.removeprefix('apps.') for n in names]
    bad = sorted(set(n for n in names if n not in known))
    if bad:
        raise CapabilityError('unknown app(s) %s: the apps are %s' % (', '.join(bad), ', '.join(known)))
    want, todo = set(), list(names)
    while todo:
        n = todo.pop()
        if n in want:
            continue
        want.add(n)
        for dep in REQUIRES.get(n, ()):
            if dep not in want and dep not in names:
                LOG.warning('app %s needs %s: running it too', n, dep)
            todo.append(dep)
    return tuple(n for n in known if n in want)


class Capabilities:
    """The app context every capability app and the OpenFlow front end share: the names of
    the capability apps the framework instantiated (the registry of what was loaded)."""

    def __init__(self):
        self.named: list[str] = []

    def add(self, name: str) -> None:
        if name not in self.named:
            self.named.append(name)

    def running(self) -> tuple[str, ...]:
        return resolve(self.named)
