"""Test certificates from a throwaway CA (trustme): server contexts for the sinks, client contexts
and a CA file for the engine's "verify" policy. Nothing here touches the system trust store."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


class TestCa:
    """A CA, and server certificates it issues for the names the tests connect to."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.ca = trustme.CA()

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A server context presenting a certificate for ``names`` (DNS names or IP addresses)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert(*(names or ("mx.test",))).configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this CA."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(context)
        return context

    def ca_file(self, directory: Path) -> str:
        path = directory / "test-ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        return str(path)
