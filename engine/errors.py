"""The exception tree, sorted by who is at fault and whether a retry can help.

Adapters convert third-party exceptions (redis, dnspython, ssl) into these once,
at their edge, so the rest of the engine reasons about a handful of types.
Per-recipient SMTP results are values (see ``engine.smtp``), never exceptions.
"""

from __future__ import annotations


class BulkmailError(Exception):
    """Base of every error bulkmail raises on purpose."""


class InputError(BulkmailError, ValueError):
    """The caller gave bad input (job, address, header, parameter). Never retried."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class ProtocolError(BulkmailError):
    """The SMTP dialogue broke its rules."""


class LocalProtocolError(ProtocolError):
    """We were about to break the protocol (a bug, or input that must not reach the wire)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that is not SMTP; the connection is unusable."""


class TransportError(BulkmailError, ConnectionError):
    """The network failed us; a retry on another connection may help."""


class ConnectError(TransportError):
    """Could not open a connection to the peer."""


class SmtpTimeout(TransportError, TimeoutError):
    """The peer did not answer within the phase's deadline."""

    def __init__(self, phase: str, seconds: float) -> None:
        self.phase = phase
        self.seconds = seconds
        super().__init__(f"timeout after {seconds:g}s waiting for the {phase} reply")


class TlsError(TransportError):
    """TLS negotiation or certificate verification failed."""


class DnsError(BulkmailError):
    """Base of DNS lookup failures; ``enhanced`` is the RFC 3463 code to report."""

    def __init__(self, message: str, *, domain: str | None = None, enhanced: str | None = None) -> None:
        self.domain = domain
        self.enhanced = enhanced
        super().__init__(message)


class DnsTemporary(DnsError):
    """SERVFAIL, timeout, refused: retry later."""


class DnsPermanent(DnsError):
    """NXDOMAIN or null MX: the domain cannot receive mail."""


class QueueError(BulkmailError):
    """The queue (Redis) refused or failed an operation."""


class QueueUnavailable(QueueError):
    """Redis cannot be reached; nothing was accepted."""


class CorruptData(QueueError):
    """A stored record (chunk records, job template) cannot be decoded: retrying cannot help,
    the chunk is quarantined."""
