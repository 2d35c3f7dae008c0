"""msgpack encoding of stored recipients and chunks.

MX routes shared by the workers through Redis are msgpack too (``encode_route``).

A chunk is the unit a worker leases: up to QueueConfig.chunk_size recipients,
stored once as a msgpack list of ``[index, to, vars | None, attempts]`` plus
the indices packed as 4-byte big-endian integers, which the Lua scripts read
to move states without decoding the records.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from engine.errors import CorruptData, DnsError, DnsPermanent, DnsTemporary
from engine.mx import MxHost, Route


@dataclass(frozen=True, slots=True)
class StoredRecipient:
    index: int
    to: str
    vars: dict[str, str] | None
    attempts: int  # attempts made before this chunk was stored

    @property
    def domain(self) -> str:
        return self.to.rpartition("@")[2]


def pack_indices(indices: Sequence[int]) -> bytes:
    return struct.pack(f">{len(indices)}I", *indices)


def unpack_indices(packed: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(packed) // 4}I", packed)


def encode_records(records: Sequence[StoredRecipient]) -> bytes:
    return msgpack.packb([[r.index, r.to, r.vars, r.attempts] for r in records], use_bin_type=True)


def decode_records(blob: bytes) -> list[StoredRecipient]:
    try:
        rows = msgpack.unpackb(blob, raw=False, use_list=True)
        return [StoredRecipient(row[0], row[1], row[2], row[3]) for row in rows]
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise CorruptData(f"corrupt chunk record: {exc}") from exc


def encode_chunk(records: Sequence[StoredRecipient]) -> tuple[bytes, bytes]:
    return encode_records(records), pack_indices([r.index for r in records])


def encode_meta(record: dict[str, object]) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


def decode_meta(blob: bytes) -> dict[str, object]:
    try:
        value = msgpack.unpackb(blob, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptData(f"corrupt job template: {exc}") from exc
    if not isinstance(value, dict):
        raise CorruptData("corrupt job template: not a map")
    return value


def encode_report(reports: Sequence[Sequence[object]]) -> bytes:
    # Redis's Lua cmsgpack predates the bin types: bytes travel as raw strings.
    return msgpack.packb(reports, use_bin_type=False)


_DNS_ERRORS: dict[str, type[DnsError]] = {"p": DnsPermanent, "t": DnsTemporary}


def encode_route(outcome: Route | DnsError) -> bytes:
    """A route or DNS failure as another worker needs it (its expiry travels as the key's TTL)."""
    if isinstance(outcome, Route):
        hosts = [[h.name, h.preference, list(h.addresses)] for h in outcome.hosts]
        return msgpack.packb(["r", outcome.implicit, outcome.site, hosts], use_bin_type=True)
    kind = "p" if isinstance(outcome, DnsPermanent) else "t"
    return msgpack.packb([kind, str(outcome), outcome.enhanced], use_bin_type=True)


def decode_route(domain: str, blob: bytes, expires: float) -> Route | DnsError:
    try:
        row = msgpack.unpackb(blob, raw=False, use_list=True)
        if row[0] == "r":
            hosts = tuple(MxHost(str(n), int(p), tuple(str(a) for a in addrs)) for n, p, addrs in row[3])
            return Route(domain=domain, hosts=hosts, implicit=bool(row[1]), site=str(row[2]), expires=expires)
        return _DNS_ERRORS[row[0]](str(row[1]), domain=domain, enhanced=row[2])
    except (ValueError, TypeError, IndexError, KeyError, msgpack.UnpackException) as exc:
        raise CorruptData(f"corrupt shared route of {domain}: {exc}") from exc
