"""The SMTP client: sans-IO machine, reply parser, commands and message encoding.

Imports only the standard library, ``engine.config`` and ``engine.errors``;
the asyncio driver is ``engine.net.smtp_protocol``.
"""

from engine.smtp.client import ClientConnection, StartTls
from engine.smtp.extensions import HELO_CAPABILITIES, Capabilities
from engine.smtp.replies import EnhancedCode, LocalRefusal, Reply, ReplyParser
from engine.smtp.states import (
    Closed,
    Event,
    NoopDone,
    Ready,
    Refused,
    StartTlsNow,
    TransactionDone,
)
from engine.smtp.transaction import (
    Envelope,
    RecipientResult,
    SessionLost,
    SessionRefused,
    Transaction,
    TransactionResult,
)

__all__ = [
    "HELO_CAPABILITIES",
    "Capabilities",
    "ClientConnection",
    "Closed",
    "EnhancedCode",
    "Envelope",
    "Event",
    "LocalRefusal",
    "NoopDone",
    "Ready",
    "RecipientResult",
    "Refused",
    "Reply",
    "ReplyParser",
    "SessionLost",
    "SessionRefused",
    "StartTls",
    "StartTlsNow",
    "Transaction",
    "TransactionDone",
    "TransactionResult",
]
