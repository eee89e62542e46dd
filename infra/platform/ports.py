"""Who holds a TCP port: so a start that finds its port taken names the process instead of half-starting.

Linux's /proc is enough: /proc/net/tcp{,6} maps a local port to a socket inode, and /proc/<pid>/fd
links name the inodes a process holds. A holder owned by another user may stay anonymous.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import random
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})"


EPHEMERAL_RANGE = PROC / "sys" / "net" / "ipv4" / "ip_local_port_range"
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux's default when unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        low, high = (int(n) for n in EPHEMERAL_RANGE.read_text().split())
        return low, high
    return 32768, 60999


def free_port() -> int:
    """A port no server holds, outside the kernel's ephemeral range, never handed out twice by this process.

    Binding port 0 would return an ephemeral port: between choosing it and a server binding it, any outgoing
    connection (a client of another test's server) may be given the same port as its local end, and the server
    then fails to start (CI saw it: "port 33127 is held by pid ... pytest"). Ports below the range are never
    assigned to outgoing connections, so only a server can take one.
    """
    low, _ = _ephemeral_range()
    pool = range(10_000, low) if low > 11_000 else range(40_000, 65_536)
    with _handed_out_lock:
        for port in itertools.islice(iter(lambda: random.choice(pool), None), 2_000):
            if port not in _handed_out and port_is_free(port) and not socket_inodes(port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free TCP port found in {pool.start}-{pool.stop - 1}")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind ``host:port`` now (SO_REUSEADDR, as gunicorn and redis-server bind)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def socket_inodes(port: int) -> set[str]:
    """Inodes of the sockets bound to local TCP ``port`` (IPv4 and IPv6); TIME_WAIT leftovers have none."""
    found: set[str] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] != "0":
                    found.add(fields[9])
    return found


def holders(port: int) -> list[Holder]:
    """The processes holding a socket bound to ``port``, as far as this user may see."""
    links = {f"socket:[{inode}]" for inode in socket_inodes(port)}
    if not links:
        return []
    out: list[Holder] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            held = any(os.readlink(fd) in links for fd in (entry / "fd").iterdir())
            if held:
                raw = (entry / "cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ")
                out.append(Holder(int(entry.name), raw.decode(errors="replace") or "?"))
        except OSError:  # gone meanwhile, or not ours to look into
            continue
    return out


def describe_holders(port: int) -> str:
    """``port 8080 is held by pid 123 (python -m http.server 8080)``, or why the holder cannot be named."""
    found = holders(port)
    if found:
        return f"port {port} is held by " + ", ".join(str(h) for h in found)
    return f"port {port} is held by a process this user cannot see (try: sudo ss -ltnp 'sport = :{port}')"


def busy_ports(ports: dict[str, int]) -> list[str]:
    """One line per named port that something else holds: ``webhook: port 8080 is held by pid …``."""
    return [f"{name}: {describe_holders(port)}" for name, port in ports.items() if not port_is_free(port)]
