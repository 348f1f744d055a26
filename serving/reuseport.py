"""Which of the servers sharing a port (SO_REUSEPORT) gets each new connection: the oldest.

By default Linux spreads a shared port's new connections over its listening sockets by a
hash. kiln's local target starts a new version beside the running one on the same port,
checks it on a port of its own, and only then stops the old one. So that no client reaches
the new one before that check, every kiln server attaches a one-instruction classic BPF
program to its port's group (SO_ATTACH_REUSEPORT_CBPF, Linux 4.5+): "socket 0", the
group's first, which is the oldest server. A newer one takes nothing until every older one
has closed its socket; then it is socket 0 itself.

Closing a listening socket resets every connection still queued on it, and while a socket
is the group's first the kernel keeps queueing new ones there. So a stopping server hands
the port over first (`hand_over`: "socket 1", the server started after it) and closes only
once its queue has stayed empty for a moment (`settled`). The handover program stays on
the group when the old server is gone: with one socket left, index 1 does not exist and
the kernel falls back to its hash (that one socket); the next server to start attaches
"socket 0" again, a few microseconds after it starts listening.

Standard library only: the rollout tests' stand-in server uses this module as it is.
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h
BPF_RET_K = 0x06  # BPF_RET | BPF_K: return a constant
FIRST_SOCKET = 0
NEXT_SOCKET = 1
_TCP_INFO_SIZE = 104  # the start of struct tcp_info, through tcpi_unacked
_TCPI_UNACKED = struct.Struct("I")  # on a listening socket: its accept queue's length
_TCPI_UNACKED_OFFSET = 24  # eight one-byte fields, then rto, ato, snd_mss, rcv_mss
# A stopping server closes once its queue has been empty this long (loopback handshakes
# finish in microseconds; a remote client's within a round trip), or after DRAIN_LIMIT.
DRAIN_SETTLE = 0.2  # seconds
DRAIN_LIMIT = 5.0  # seconds
# The label a serving image carries when its server does this (Dockerfile.serve).
IMAGE_LABEL = "io.kiln.reuseport"
IMAGE_LABEL_VALUE = "oldest-takes-all"


def oldest_takes_all(sock: socket.socket) -> bool:
    """Send every new connection on the port of `sock` to the group's first (oldest) socket;
    False when `sock` does not share its port, or the kernel refuses."""
    return _steer(sock, FIRST_SOCKET)


def hand_over(sock: socket.socket) -> bool:
    """Send the port's new connections to the group's second socket, the server started
    after the first; False when `sock` does not share its port, or the kernel refuses."""
    return _steer(sock, NEXT_SOCKET)


def queued(sock: socket.socket) -> int:
    """How many connections wait on the listening socket `sock` to be accepted."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    return int(_TCPI_UNACKED.unpack_from(info, _TCPI_UNACKED_OFFSET)[0])


class Drain:
    """When a handed-over socket may close: its queue empty for DRAIN_SETTLE seconds, or
    DRAIN_LIMIT seconds gone. `settled(now)` is asked between accepts, with a clock."""

    def __init__(self, sockets: list[socket.socket], start: float) -> None:
        self.sockets = sockets
        self.limit = start + DRAIN_LIMIT
        self.empty_since: float | None = None

    def settled(self, now: float) -> bool:
        if now >= self.limit:
            return True
        if any(queued(sock) for sock in self.sockets):
            self.empty_since = None
            return False
        if self.empty_since is None:
            self.empty_since = now
        return now - self.empty_since >= DRAIN_SETTLE


def _steer(sock: socket.socket, index: int) -> bool:
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        return False
    program = ctypes.create_string_buffer(struct.pack("HBBI", BPF_RET_K, 0, 0, index))
    # struct sock_fprog: the number of instructions, then a pointer to them
    fprog = struct.pack("HxxxxxxQ", 1, ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError:
        return False
    return True
