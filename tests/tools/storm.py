"""Emit a storm from inside a test VM: RATE broadcast frames a second for SECONDS, each from
a new (locally administered, unicast) source MAC.

usage: storm.py IFACE RATE SECONDS {macs,arp} [--subnet 10.10.0.0/24] [--seed 7]
  macs  local-experimental ethertype 0x88b5 frames, 60 bytes
  arp   ARP requests with a forged sender (the new MAC and an address of the subnet), for
        every address of the subnet in turn
Prints 'sent N in T s' at the end."""
import argparse
import ipaddress
import socket
import struct
import time

ap = argparse.ArgumentParser()
ap.add_argument('iface')
ap.add_argument('rate', type=int)
ap.add_argument('seconds', type=float)
ap.add_argument('mode', choices=('macs', 'arp'))
ap.add_argument('--subnet', default='10.10.0.0/24')
ap.add_argument('--seed', type=int, default=7)
a = ap.parse_args()

n = int(a.rate * a.seconds)
hosts = [h.packed for h in ipaddress.ip_network(a.subnet).hosts()]
BCAST = b'\xff' * 6


def frame(i: int) -> bytes:
    src = bytes([0x02, a.seed & 0xff]) + i.to_bytes(4, 'big')
    if a.mode == 'macs':
        f = BCAST + src + struct.pack('!H', 0x88b5)
    else:
        f = BCAST + src + struct.pack('!HHHBBH', 0x0806, 1, 0x0800, 6, 4, 1) + src + hosts[i % len(hosts)] \
            + bytes(6) + hosts[(i * 7 + 3) % len(hosts)]
    return f + bytes(max(0, 60 - len(f)))


s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((a.iface, 0))
tick = 0.01
per_tick = max(1, int(a.rate * tick))
start = time.monotonic()
sent = 0
for k in range(0, n, per_tick):
    for i in range(k, min(n, k + per_tick)):     # built as they go: no CPU burst at the start
        try:
            s.send(frame(i))
            sent += 1
        except OSError:                 # a full socket buffer: that frame is lost, go on
            pass
    delay = start + (k // per_tick + 1) * tick - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print('sent %d in %.2f s' % (sent, time.monotonic() - start), flush=True)
