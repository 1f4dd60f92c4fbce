"""Send raw Ethernet frames from inside a test namespace.

usage: send_frames.py IFACE SRC_MAC... [--dst MAC] [--vlan VID] [--ethertype 0x88b5]
One frame per source MAC (local-experimental ethertype by default, 60 bytes)."""
import argparse
import socket
import struct

ap = argparse.ArgumentParser()
ap.add_argument('iface')
ap.add_argument('srcs', nargs='+')
ap.add_argument('--dst', default='ff:ff:ff:ff:ff:ff')
ap.add_argument('--vlan', type=int)
ap.add_argument('--ethertype', type=lambda s: int(s, 0), default=0x88b5)
a = ap.parse_args()
mac = lambda m: bytes.fromhex(m.replace(':', ''))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((a.iface, 0))
for src in a.srcs:
    tag = struct.pack('!HH', 0x8100, a.vlan) if a.vlan is not None else b''
    frame = mac(a.dst) + mac(src) + tag + struct.pack('!H', a.ethertype)
    s.send(frame + b'x' * max(0, 60 - len(frame)))
