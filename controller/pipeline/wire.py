"""Flow -> OpenFlow 1.3/1.4 wire bytes, with struct and caches (pure: no os-ken).

os-ken builds a parser object per match field, action and instruction and serialises them one
by one: about 45 us a flow (80 on the 2-CPU bench machine), where `ovs-ofctl --bundle
add-flows` needs about 10 (issue 11, part 4).  This module writes the same bytes directly,
about 3 us a flow cold and 0.5 us cached (bench/README.md: Flow push):

  - a Flow's match and instructions are encoded once and kept in its `_wire` slot, so a flow
    sent again (a delete, a reconnect, the same compiled object next converge) costs a
    struct.pack of its header;
  - a match (field, value) and a Flow's (actions, goto) are encoded once per process, an
    action tuple too (they repeat: the same VLAN, output port, register load or ct() on
    thousands of flows); addresses, mostly one of a kind, are written without keeping them;
    every cache is bounded;
  - the kinds with nested structure (ct, learn, clone, bundle, output_trunc) are encoded by
    the caller's `slow` encoder (controller/ofp.py: os-ken), once per distinct action.

The bytes are those os-ken sends for the same Flow (tests/unit/test_wire.py compares them
byte for byte for every action kind and match field; tests/ovs/test_actions_roundtrip.py
installs them into OVS): the match fields in os-ken's order (by OXM class and field number,
then every field after its prerequisites), the instructions meter, apply-actions,
write-metadata, goto-table.
"""
from __future__ import annotations

import operator
import socket
import struct
from typing import Callable

from controller.pipeline import fields as F
from controller.pipeline import tables
from controller.pipeline.flow import CONTROLLER, IN_PORT, LOCAL, Flow

OFPT_FLOW_MOD, OFPT_BUNDLE_ADD_MESSAGE = 14, 34
OFPFC_ADD, OFPFC_MODIFY, OFPFC_MODIFY_STRICT, OFPFC_DELETE, OFPFC_DELETE_STRICT = 0, 1, 2, 3, 4
OFPFF_SEND_FLOW_REM = 1
NO_BUFFER, OFPP_ANY, OFPG_ANY = 0xffffffff, 0xffffffff, 0xffffffff
OFPCML_NO_BUFFER = 0xffff
PORTS = {CONTROLLER: 0xfffffffd, IN_PORT: 0xfffffff8, LOCAL: 0xfffffffe}
NX_EXPERIMENTER = 0x00002320
ONF_EXPERIMENTER = 0x4f4e4600

# ---- match fields -------------------------------------------------------------------------
# field: (OXM class, field number, value bytes).  tcp_flags is the ONF experimenter field.
_OXM = {
    'in_port': (0x8000, 0, 4), 'metadata': (0x8000, 2, 8), 'eth_dst': (0x8000, 3, 6),
    'eth_src': (0x8000, 4, 6), 'eth_type': (0x8000, 5, 2), 'vlan_vid': (0x8000, 6, 2),
    'vlan_pcp': (0x8000, 7, 1), 'ip_dscp': (0x8000, 8, 1), 'ip_ecn': (0x8000, 9, 1),
    'ip_proto': (0x8000, 10, 1), 'ipv4_src': (0x8000, 11, 4), 'ipv4_dst': (0x8000, 12, 4),
    'tcp_src': (0x8000, 13, 2), 'tcp_dst': (0x8000, 14, 2), 'udp_src': (0x8000, 15, 2),
    'udp_dst': (0x8000, 16, 2), 'icmpv4_type': (0x8000, 19, 1), 'icmpv4_code': (0x8000, 20, 1),
    'arp_op': (0x8000, 21, 2), 'arp_spa': (0x8000, 22, 4), 'arp_tpa': (0x8000, 23, 4),
    'arp_sha': (0x8000, 24, 6), 'arp_tha': (0x8000, 25, 6), 'tunnel_id': (0x8000, 38, 8),
    'nw_ttl': (0x0001, 29, 1), 'tun_ipv4_src': (0x0001, 31, 4), 'tun_ipv4_dst': (0x0001, 32, 4),
    'pkt_mark': (0x0001, 33, 4), 'conj_id': (0x0001, 37, 4), 'ct_state': (0x0001, 105, 4),
    'ct_zone': (0x0001, 106, 2), 'ct_mark': (0x0001, 107, 4), 'ct_label': (0x0001, 108, 16),
    'tcp_flags': (0xffff, 42, 2),
    # NXM-only names os-ken uses in register loads and moves (read back as these)
    'in_port_nxm': (0x0000, 0, 2),
}
_OXM.update({'reg%d' % i: (0x0001, i, 4) for i in range(16)})
_OXM.update({'xxreg%d' % i: (0x0001, 111 + i, 16) for i in range(4)})


class WireError(ValueError):
    pass


def _hdr(cls: int, field: int, masked: bool, n: int) -> bytes:
    """The OXM header (with the experimenter id for tcp_flags)."""
    if cls == 0xffff:
        return struct.pack('!II', cls << 16 | field << 9 | masked << 8 | (4 + n * (1 + masked)),
                           ONF_EXPERIMENTER)
    return struct.pack('!I', cls << 16 | field << 9 | masked << 8 | n * (1 + masked))


_EXACT = {f: _hdr(c, n, False, size) for f, (c, n, size) in _OXM.items()}
_MASKED = {f: _hdr(c, n, True, size) for f, (c, n, size) in _OXM.items()}
_SIZE = {f: v[2] for f, v in _OXM.items()}


def _os_ken_rank(field: str) -> tuple:
    """os-ken sorts a match by OXM number (NXM class 1 fields first, the ONF one last);
    controller/ofp.py then moves every field after its prerequisites (stable sort)."""
    cls, num, _ = _OXM[field]
    order = (2, num) if cls == 0xffff else (0, cls << 7 | num) if cls == 0x0001 else (1, num)
    return (len(F.PREREQS.get(field, ())),) + order


_RANK = {f: _os_ken_rank(f) for f in _OXM}
_ORDERS: dict[tuple, tuple] = {}         # field names in a Flow's order -> indexes in wire order
_ADDRESSES = frozenset(F.MACS | F.IPV4)


def _value(field: str, v, size: int) -> bytes:
    t = type(v)
    if t is int:
        return v.to_bytes(size, 'big')
    if t is str and field in F.MACS and len(bytes.fromhex(v.replace(':', ''))) != 6:
        raise ValueError('not a MAC address')
    return F.to_int(field, v).to_bytes(size, 'big')


def oxm(field: str, value) -> bytes:
    """One match field (a (value, mask) tuple: masked, value bits outside the mask cleared)."""
    try:
        size = _SIZE[field]
    except KeyError:
        raise WireError('unknown match field %r' % field) from None
    try:
        if type(value) is tuple:
            v, m = F.to_int(field, value[0]), F.to_int(field, value[1])
            return _MASKED[field] + (v & m).to_bytes(size, 'big') + m.to_bytes(size, 'big')
        return _EXACT[field] + _value(field, value, size)
    except (OverflowError, OSError, ValueError) as e:
        raise WireError('%s=%r: %s' % (field, value, e)) from None


_ITEMS: dict[tuple, bytes] = {}         # (field, value) -> its OXM bytes
MAX_ITEMS = 1 << 16
_first = operator.itemgetter(0)


def match(m: tuple) -> bytes:
    """An ofp_match (OXM, padded to 8 bytes) for a Flow's match tuple."""
    names = tuple(map(_first, m))
    order = _ORDERS.get(names)
    if order is None:
        for k in names:
            if k not in _RANK:
                raise WireError('unknown match field %r' % k)
        order = tuple(sorted(range(len(names)), key=lambda i: _RANK[names[i]]))
        order = _ORDERS[names] = None if order == tuple(range(len(names))) else order
        if len(_ORDERS) > 4096:
            _ORDERS.clear()
    items = _ITEMS
    out = []
    for item in (m if order is None else [m[i] for i in order]):
        b = items.get(item)
        if b is None:
            field, value = item
            if field in _ADDRESSES and type(value) is str:   # one of many: not worth keeping
                try:
                    if _SIZE[field] == 4:
                        b = _EXACT[field] + socket.inet_aton(value) if value.count('.') == 3 else None
                    else:
                        b = _EXACT[field] + bytes.fromhex(value.replace(':', ''))
                        b = b if len(b) == 10 else None
                except (OSError, ValueError):
                    b = None
                if b is None:
                    b = oxm(field, value)           # raises WireError, naming the field
            else:
                b = oxm(field, value)
                if len(items) >= MAX_ITEMS:
                    items.clear()
                items[item] = b
        out.append(b)
    body = b''.join(out)
    n = 4 + len(body)
    return _MATCH_HDR(1, n) + body + _PAD[-n % 8]


_MATCH_HDR = struct.Struct('!HH').pack
_PAD = [bytes(i) for i in range(8)]


# ---- actions ------------------------------------------------------------------------------

def _nx(subtype: int, body: bytes) -> bytes:
    """A Nicira experimenter action: header, subtype, body, padded to 8."""
    n = 10 + len(body)
    pad = -n % 8
    return struct.pack('!HHIH', 0xffff, n + pad, NX_EXPERIMENTER, subtype) + body + bytes(pad)


def _nxm_header(field: str) -> int:
    """The 32-bit header os-ken writes for a field named in an NX action."""
    try:
        return struct.unpack('!I', _EXACT[field][:4])[0]
    except KeyError:
        raise WireError('unknown field %r' % field) from None


def _ofs_nbits(ofs: int, n: int) -> int:
    return ofs << 6 | (n - 1)


def _set_field(field: str, value) -> bytes:
    if type(value) is tuple:              # a masked set is an NXAST_REG_LOAD (see controller/ofp.py)
        ofs, n = F.mask_bits(F.to_int(field, value[1]))
        v = F.to_int(field, value[0]) >> ofs
        return _nx(7, struct.pack('!HIQ', _ofs_nbits(ofs, n), _nxm_header(field), v))
    tlv = oxm(field, value)
    n = 4 + len(tlv)
    return struct.pack('!HH', 25, n + (-n % 8)) + tlv + bytes(-n % 8)


def _output(port) -> bytes:
    return struct.pack('!HHIH6x', 0, 16, PORTS.get(port, port), OFPCML_NO_BUFFER)


def _move(src: str, dst: str) -> bytes:
    (sf, so, n), (df, do, _) = F.subfield(src), F.subfield(dst)
    return _nx(6, struct.pack('!HHHII', n, so, do, _nxm_header(sf), _nxm_header(df)))


def _output_reg(src: str) -> bytes:
    f, ofs, n = F.subfield(src)
    return _nx(15, struct.pack('!HIH6x', _ofs_nbits(ofs, n), _nxm_header(f), OFPCML_NO_BUFFER))


def _multipath(n_links: int, dst: str) -> bytes:
    # fields symmetric_l4 (1), basis 0, algorithm hash_threshold (1), arg 0, dst[0..15]
    return _nx(10, struct.pack('!HH2xHHI2xHI', 1, 0, 1, n_links - 1, 0, _ofs_nbits(0, 16), _nxm_header(dst)))


_ENCODE: dict[str, Callable[..., bytes]] = {
    'output': _output,
    'output_reg': _output_reg,
    'push_vlan': lambda vid: struct.pack('!HHH2x', 17, 8, 0x8100) + _set_field('vlan_vid', 0x1000 | vid),
    'pop_vlan': lambda: struct.pack('!HH4x', 18, 8),
    'set_field': _set_field,
    'group': lambda gid: struct.pack('!HHI', 22, 8, gid),
    'move': _move,
    'dec_ttl': lambda: struct.pack('!HH4x', 24, 8),
    'ct_clear': lambda: _nx(43, bytes(6)),
    'set_in_port': lambda port: _nx(7, struct.pack('!HIQ', _ofs_nbits(0, 16), _nxm_header('in_port_nxm'), port)),
    'multipath': _multipath,
    'resubmit': lambda table: _nx(14, struct.pack('!HB3x', 0xfff8, tables.table_id(table))),
    'conjunction': lambda cid, clause, n: _nx(34, struct.pack('!BBI', clause - 1, n, cid)),
}
INSTRUCTIONS = frozenset({'meter', 'write_metadata'})


class Encoder:
    """Encodes Flows for one OpenFlow version; `slow(action) -> bytes` encodes the action
    kinds this module does not write itself (ct, learn, clone, bundle, output_trunc)."""

    MAX_ACTIONS = 1 << 16                  # distinct action tuples kept

    def __init__(self, version: int, slow: Callable[[tuple], bytes]):
        self.version = version
        self.slow = slow
        self._actions: dict[tuple, bytes] = {}
        self._instructions: dict[tuple, bytes] = {}     # (actions, goto) -> instruction bytes
        self._tables: dict[str, int] = {}
        self._flow_mod = struct.Struct('!BBHIQQBBHHHIIIHH')       # ofp_header + ofp_flow_mod
        self._bundled = struct.Struct('!BBHIIHHBBHIQQBBHHHIIIHH')  # bundle add + inner flow-mod

    def action(self, a: tuple) -> bytes:
        b = self._actions.get(a)
        if b is None:
            fn = _ENCODE.get(a[0])
            try:
                b = fn(*a[1:]) if fn is not None else self.slow(a)
            except (TypeError, KeyError, ValueError, struct.error, OverflowError) as e:
                raise WireError('cannot encode action %r: %s' % (a, e)) from None
            if len(self._actions) >= self.MAX_ACTIONS:
                self._actions.clear()
            self._actions[a] = b
        return b

    def instructions(self, flow: Flow) -> bytes:
        key = (flow.actions, flow.goto)
        b = self._instructions.get(key)
        if b is None:
            b = self._instructions_of(flow.actions, flow.goto)
            if len(self._instructions) >= self.MAX_ACTIONS:
                self._instructions.clear()
            self._instructions[key] = b
        return b

    def _instructions_of(self, acts: tuple, goto) -> bytes:
        out = []
        if acts and acts[0][0] == 'meter':                    # meter first ...
            out.append(struct.pack('!HHI', 6, 8, acts[0][1]))
            acts = acts[1:]
        wmeta = None
        if acts and acts[-1][0] == 'write_metadata':          # ... write_metadata after the actions
            wmeta, acts = acts[-1], acts[:-1]
        if acts:
            body = b''.join([self.action(a) for a in acts])
            out.append(struct.pack('!HH4x', 4, 8 + len(body)) + body)
        if wmeta is not None:
            out.append(struct.pack('!HH4xQQ', 2, 24, wmeta[1], wmeta[2]))
        if goto:
            out.append(struct.pack('!HHB3x', 1, 8, tables.table_id(goto)))
        return b''.join(out)

    def parts(self, flow: Flow, instructions: bool = True) -> tuple:
        """(table id, flags, match bytes, instruction bytes or None), kept on the Flow (a
        tuple of atoms: the cyclic collector stops tracking it).  A delete needs only the
        match, so a flow read back with an action nobody can write can still be deleted."""
        got = flow._wire
        if got is None or (instructions and got[3] is None):
            tid = self._tables.get(flow.table)
            if tid is None:
                tid = self._tables[flow.table] = tables.table_id(flow.table)
            got = (tid, OFPFF_SEND_FLOW_REM if flow.notify_removal else 0,
                   got[2] if got is not None else match(flow.match),
                   self.instructions(flow) if instructions else None)
            object.__setattr__(flow, '_wire', got)           # (a frozen Flow: its cache slot)
        return got

    def _pieces(self, flow: Flow, command: int) -> tuple:
        """(table id, flags, match bytes, instruction bytes) of a flow-mod; deletes carry the
        match only (OVS ignores instructions there)."""
        got = flow._wire
        if command == OFPFC_DELETE_STRICT or command == OFPFC_DELETE:
            if got is None:
                got = self.parts(flow, False)
            return got[0], got[1], got[2], b''
        if got is None or got[3] is None:
            got = self.parts(flow)
        return got

    def flow_mod(self, flow: Flow, command: int, cookie: int, xid: int) -> bytes:
        """One OFPT_FLOW_MOD; deletes carry the match only (OVS ignores instructions there)."""
        tid, flags, m, inst = self._pieces(flow, command)
        return self._flow_mod.pack(
            self.version, OFPT_FLOW_MOD, 48 + len(m) + len(inst), xid, cookie, 0, tid, command,
            flow.idle_timeout, flow.hard_timeout, flow.priority, NO_BUFFER, OFPP_ANY, OFPG_ANY, flags, 0) + m + inst

    def bundle_add(self, flow: Flow, command: int, cookie: int, xid: int, bundle_id: int,
                   bundle_flags: int) -> bytes:
        """One OFPT_BUNDLE_ADD_MESSAGE carrying the flow-mod (its xid is the outer one)."""
        tid, flags, m, inst = self._pieces(flow, command)
        n = 48 + len(m) + len(inst)
        return self._bundled.pack(
            self.version, OFPT_BUNDLE_ADD_MESSAGE, 16 + n, xid, bundle_id, 0, bundle_flags,
            self.version, OFPT_FLOW_MOD, n, xid, cookie, 0, tid, command, flow.idle_timeout,
            flow.hard_timeout, flow.priority, NO_BUFFER, OFPP_ANY, OFPG_ANY, flags, 0) + m + inst
