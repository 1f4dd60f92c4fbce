"""A minimal OpenFlow 1.3 switch on a plain socket, for tests that need a switch the test
controls: an impostor claiming another switch's dpid, or a switch whose barrier replies come
late (so an apply is in flight for as long as the test wants).  It answers the handshake
(hello, features, port description), echoes, flow-stats requests (with no flows) and -- if
`answers` -- barriers; flow-mods and packet-outs are swallowed."""
from __future__ import annotations

import socket
import struct
import threading
import time

VERSION = 4                     # OpenFlow 1.3
HELLO, ECHO_REQ, ECHO_REP, FEATURES_REQ, FEATURES_REP = 0, 2, 3, 5, 6
MP_REQ, MP_REP, BARRIER_REQ, BARRIER_REP = 18, 19, 20, 21


class FakeOFSwitch:
    def __init__(self, port: int, dpid: int, answers: bool = True, barrier_delay: float = 0.0,
                 source: str = '127.0.0.1', ports=()):
        self.ports = list(ports)                  # [(port number, name)]
        self.port, self.dpid, self.answers, self.barrier_delay = port, dpid, answers, barrier_delay
        self.source = source
        self.barriers: list[float] = []          # time.monotonic() of every barrier request
        self.closed_by_peer = threading.Event()
        self.sock = None
        self._thread = None

    def start(self) -> 'FakeOFSwitch':
        deadline = time.monotonic() + 15
        while True:                  # the controller may still be starting its OpenFlow listener
            try:
                self.sock = socket.create_connection(('127.0.0.1', self.port), timeout=10,
                                                     source_address=(self.source, 0))
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sock.settimeout(None)
        self._send(HELLO, 0, b'')
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        if self._thread is not None:
            self._thread.join(5)

    def _send(self, type_: int, xid: int, body: bytes) -> None:
        self.sock.sendall(struct.pack('!BBHI', VERSION, type_, 8 + len(body), xid) + body)

    def _recv_exact(self, n: int) -> bytes:
        buf = b''
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _run(self) -> None:
        try:
            while True:
                _, type_, length, xid = struct.unpack('!BBHI', self._recv_exact(8))
                body = self._recv_exact(length - 8)
                self._handle(type_, xid, body)
        except (EOFError, OSError):
            self.closed_by_peer.set()

    def _handle(self, type_: int, xid: int, body: bytes) -> None:
        if type_ == ECHO_REQ:
            self._send(ECHO_REP, xid, body)
        elif type_ == FEATURES_REQ:
            self._send(FEATURES_REP, xid, struct.pack('!QIBBxxII', self.dpid, 0, 254, 0, 0, 0))
        elif type_ == MP_REQ:
            mp_type = struct.unpack('!H', body[:2])[0]
            if mp_type == 13:                              # port description
                self._send(MP_REP, xid, struct.pack('!HHxxxx', mp_type, 0) + b''.join(
                    struct.pack('!I4x6s2x16sIIIIIIII', no, bytes([2, 0, 0, 0, self.dpid & 0xff, no]),
                                name.encode(), 0, 0, 0, 0, 0, 0, 0, 0) for no, name in self.ports))
            elif self.answers:                             # flow stats: no flows
                self._send(MP_REP, xid, struct.pack('!HHxxxx', mp_type, 0))
        elif type_ == BARRIER_REQ and self.answers:
            self.barriers.append(time.monotonic())
            if self.barrier_delay:
                threading.Timer(self.barrier_delay, self._late_barrier, (xid,)).start()
            else:
                self._send(BARRIER_REP, xid, b'')

    def _late_barrier(self, xid: int) -> None:
        try:
            self._send(BARRIER_REP, xid, b'')
        except OSError:
            pass
