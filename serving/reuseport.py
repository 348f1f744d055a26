"""Which of the servers sharing a port (SO_REUSEPORT) gets each new connection: the oldest.

By default Linux spreads a shared port's new connections over its listening sockets by a
hash. kiln's local target starts a new version beside the running one on the same port,
checks it on a port of its own, and only then stops the old one. So that no client reaches
the new one before that check, every kiln server attaches a one-instruction classic BPF
program to its port's group (SO_ATTACH_REUSEPORT_CBPF, Linux 4.5+): "socket 0", the
group's first, which is the oldest server. A newer one takes nothing until every older one
has closed its socket (when it stops, on SIGTERM); then it is socket 0 itself.

Standard library only: the rollout tests' stand-in server uses this module as it is.
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h
BPF_RET_K = 0x06  # BPF_RET | BPF_K: return a constant
FIRST_SOCKET = 0
# The label a serving image carries when its server does this (Dockerfile.serve).
IMAGE_LABEL = "io.kiln.reuseport"
IMAGE_LABEL_VALUE = "oldest-takes-all"


def oldest_takes_all(sock: socket.socket) -> bool:
    """Send every new connection on the port of `sock` to the group's first (oldest) socket;
    False when `sock` does not share its port, or the kernel refuses."""
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        return False
    program = ctypes.create_string_buffer(struct.pack("HBBI", BPF_RET_K, 0, 0, FIRST_SOCKET))
    # struct sock_fprog: the number of instructions, then a pointer to them
    fprog = struct.pack("HxxxxxxQ", 1, ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError:
        return False
    return True
