"""Free TCP ports on loopback addresses, for servers the tests start."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1", also: tuple[str, ...] = ()) -> int:
    """A port free on ``host`` and on every address in ``also`` (same port, many fake MX hosts)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if all(_is_free(addr, port) for addr in also):
            return port
    raise RuntimeError("no common free port found")


def _is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
