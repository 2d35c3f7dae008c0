"""SSLContext construction per TLS policy, for STARTTLS on outbound SMTP.

"opportunistic" and "required" encrypt without verifying the certificate:
that is what MTAs do by default (Postfix "may"/"encrypt"), because most MX
certificates would fail a check and a failed check must not send mail in plain
text instead. "verify" checks the chain against ``ca_file`` (or the system
store) and the MX host name. Building a context that loads the system store
costs milliseconds: build one per policy with ``TlsContexts`` and reuse it.
"""

from __future__ import annotations

import ssl

from engine.config import TlsPolicy
from engine.errors import TlsError, TransportError
from engine.smtp.client import StartTls

#: what the sans-IO machine is told to do about STARTTLS under each policy
STARTTLS_MODES: dict[str, StartTls] = {
    "none": "never",
    "opportunistic": "offered",
    "required": "required",
    "verify": "required",
}


class HandshakeFailed(TlsError):
    """The TLS handshake itself failed: the one case "opportunistic" retries in plain text."""


def convert_error(exc: BaseException | None) -> BaseException | None:
    """ssl and OS exceptions from the transport as ``engine.errors``, the cause kept."""
    if exc is None or not isinstance(exc, OSError):
        return exc
    error: BaseException = (
        TlsError(str(exc)) if isinstance(exc, ssl.SSLError) else TransportError(str(exc))
    )
    error.__cause__ = exc
    return error


def client_context(policy: TlsPolicy, ca_file: str | None = None) -> ssl.SSLContext | None:
    """None for policy "none"; otherwise a client context for loop.start_tls."""
    if policy == "none":
        return None
    if policy == "verify":
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class TlsContexts:
    """One context per policy, built on first use (one per worker process)."""

    def __init__(self, ca_file: str | None = None) -> None:
        self._ca_file = ca_file
        self._contexts: dict[str, ssl.SSLContext | None] = {}

    def get(self, policy: TlsPolicy) -> ssl.SSLContext | None:
        if policy not in self._contexts:
            self._contexts[policy] = client_context(policy, self._ca_file)
        return self._contexts[policy]
