"""How durable an acknowledged write is on the Redis bulkmail talks to.

``bulkmail submit`` acknowledges a job only after Redis replied to the commit.
Whether that reply means "on disk" depends on the server's persistence:

======================  =========================================================
mode                    an acknowledged job survives ...
======================  =========================================================
``aof-always``          a crash of Redis or of the host (fsynced before the reply)
``aof-everysec``        a crash of Redis; a host crash may lose ~1 s of jobs,
                        unless the server has WAITAOF (Redis >= 7.2), which
                        submit then uses to wait for the fsync
``aof-no``              a crash of Redis; a host crash may lose ~30 s (the OS
                        decides when to write)
``aof``                 AOF is on, its fsync policy could not be read (CONFIG
                        refused, INFO allowed)
``none``                nothing certain: no AOF (RDB snapshots lose minutes)
``unknown``             neither CONFIG nor INFO could be read
======================  =========================================================

``probe`` (async) and ``probe_url`` (sync, for ``bulkmail serve`` before it
forks its workers) read ``CONFIG GET appendonly appendfsync``, falling back to
``INFO persistence`` where an ACL forbids CONFIG; the server version comes from
``INFO server`` or ``HELLO`` (allowed to every user). They never raise: a server
that cannot be read is ``unknown`` with the reason in ``detail``.

WAITAOF (Redis >= 7.2, https://redis.io/commands/waitaof/) blocks until the
previous writes *of the same connection* are fsynced to the local AOF; it must
therefore be sent on the connection that carried the commit (a pipeline), and
its reply checked: ``check_waitaof`` raises unless the local fsync happened.
Redis 7.0 and 7.1 answer ``ERR unknown command``; ``waitaof_supported`` is
decided from the version so that no submit ever sends it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rexc
from redis.asyncio import Redis

from engine.errors import QueueError

AOF_ALWAYS, AOF_EVERYSEC, AOF_NO, AOF, NONE, UNKNOWN = (
    "aof-always", "aof-everysec", "aof-no", "aof", "none", "unknown",
)  # fmt: skip
MODES = (AOF_ALWAYS, AOF_EVERYSEC, AOF_NO, AOF, NONE, UNKNOWN)
WAITAOF_SINCE = (7, 2)
WAITAOF_TIMEOUT_MS = 5000  # a local fsync takes milliseconds; 5 s means the disk is in trouble


@dataclass(frozen=True, slots=True)
class Durability:
    mode: str  # one of MODES
    version: tuple[int, ...] | None = None  # the server's, e.g. (7, 0, 15)
    source: str = "config"  # where the mode came from: config, info, or none
    detail: str = ""  # why CONFIG / INFO could not be read

    @property
    def waitaof_supported(self) -> bool:
        return self.version is not None and self.version[:2] >= WAITAOF_SINCE

    @property
    def use_waitaof(self) -> bool:
        """Submit should confirm the commit with WAITAOF 1 0: AOF is on but not known to fsync
        before each reply, and the server knows the command (WAITAOF 1 errors without AOF)."""
        return self.waitaof_supported and self.mode in (AOF_EVERYSEC, AOF_NO, AOF)

    @property
    def durable(self) -> bool:
        """An acknowledged job is on disk when submit returns."""
        return self.mode == AOF_ALWAYS or self.use_waitaof

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version)) if self.version else "unknown version"

    def describe(self) -> str:
        """One line for logs: the mode and what an acknowledgement means."""
        if self.mode == AOF_ALWAYS:
            return "aof-always: a job is fsynced to the AOF before submit returns"
        if self.use_waitaof:
            return f"{self.mode}: submit waits for the AOF fsync with WAITAOF (Redis {self.version_text})"
        return f"{self.mode}: acknowledged jobs are NOT guaranteed on disk"

    def warning(self, where: str = "") -> str | None:
        """The loud text ``bulkmail serve`` prints on stderr, or None when submit is durable."""
        if self.durable:
            return None
        at = f" at {redact(where)}" if where else ""
        fix = ("Configure Redis with 'appendonly yes' and 'appendfsync always' "
               "(or use Redis >= 7.2, where submit confirms each job with WAITAOF).")  # fmt: skip
        if self.mode == NONE:
            risk = ("has no append-only file (appendonly no): a job acknowledged by 'bulkmail submit' "
                    "is only in memory and is LOST if Redis or the host stops (RDB snapshots lose minutes).")  # fmt: skip
        elif self.mode == AOF_EVERYSEC:
            risk = ("fsyncs its append-only file once per second (appendfsync everysec) and has no WAITAOF "
                    f"(Redis {self.version_text} < 7.2): up to about 1 second of acknowledged jobs can be "
                    "LOST if the host crashes.")  # fmt: skip
        elif self.mode == AOF_NO:
            risk = ("leaves fsyncing its append-only file to the OS (appendfsync no): up to about 30 seconds "
                    "of acknowledged jobs can be LOST if the host crashes.")  # fmt: skip
        elif self.mode == AOF:
            risk = (f"has an append-only file, but its fsync policy cannot be read ({self.detail}): "
                    "acknowledged jobs are durable only if it runs with appendfsync always.")  # fmt: skip
        else:
            risk = (f"cannot be asked about its persistence ({self.detail}): bulkmail cannot tell whether "
                    "acknowledged jobs survive a restart.")  # fmt: skip
        return f"WARNING: durability {self.mode}: Redis{at} {risk} {fix}"

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "version": self.version_text if self.version else None,
                "source": self.source, "durable": self.durable, "waitaof": self.use_waitaof,
                "detail": self.detail}  # fmt: skip


def classify(appendonly: str | None, appendfsync: str | None) -> str:
    """The mode from the two settings (as CONFIG GET returns them)."""
    if appendonly is None:
        return UNKNOWN
    if appendonly.lower() not in ("yes", "1"):
        return NONE
    policy = (appendfsync or "").lower()
    return {"always": AOF_ALWAYS, "everysec": AOF_EVERYSEC, "no": AOF_NO}.get(policy, AOF)


def parse_version(text: str | bytes | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    found = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    return tuple(int(part) for part in found.groups() if part is not None) if found else None


def redact(url: str) -> str:
    """A URL without its password, for messages."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _version_from_hello(reply: Any) -> tuple[int, ...] | None:
    if isinstance(reply, dict):
        fields = {_text(k): v for k, v in reply.items()}
    elif isinstance(reply, list | tuple):
        fields = {_text(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}
    else:
        return None
    return parse_version(_text(fields.get("version")))


def _why(exc: Exception) -> str:
    name = "NOPERM" if isinstance(exc, rexc.NoPermissionError) else type(exc).__name__
    return f"{name}: {exc}"


def _from_config(raw: Any) -> str | None:
    if not raw:
        return None  # CONFIG renamed to "" answers nothing useful
    values = {_text(k): _text(v) for k, v in dict(raw).items()}
    return classify(values.get("appendonly"), values.get("appendfsync"))


def _from_info(info: Any) -> str:
    enabled = info.get("aof_enabled") if isinstance(info, dict) else None
    if enabled is None:
        return UNKNOWN
    return AOF if str(enabled) == "1" else NONE


async def probe(redis: Redis) -> Durability:
    """Ask the server (never raises; ``unknown`` when it cannot be asked)."""
    version: tuple[int, ...] | None = None
    problems: list[str] = []
    try:
        version = parse_version(_text((await redis.info("server")).get("redis_version")))
    except (rexc.RedisError, OSError) as exc:
        if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError):
            return Durability(UNKNOWN, None, "none", f"Redis unreachable: {exc}")
        problems.append(f"INFO server: {_why(exc)}")
        with contextlib.suppress(rexc.RedisError, OSError):
            version = _version_from_hello(await redis.execute_command("HELLO"))
    try:
        mode = _from_config(await redis.config_get("appendonly", "appendfsync"))
        if mode is not None:
            return Durability(mode, version, "config")
        problems.append("CONFIG GET: no answer")
    except (rexc.RedisError, OSError) as exc:
        problems.append(f"CONFIG GET: {_why(exc)}")
    try:
        mode = _from_info(await redis.info("persistence"))
        return Durability(mode, version, "info", "; ".join(problems))
    except (rexc.RedisError, OSError) as exc:
        problems.append(f"INFO persistence: {_why(exc)}")
    return Durability(UNKNOWN, version, "none", "; ".join(problems))


def probe_url(url: str, timeout: float = 5.0) -> Durability:
    """``probe`` for synchronous callers (``bulkmail serve`` before it starts its workers):
    a client of its own on a loop of its own, closed before returning."""

    async def run() -> Durability:
        client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return await probe(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


def waitaof_command(timeout_ms: int = WAITAOF_TIMEOUT_MS) -> tuple[str, int, int, int]:
    """``WAITAOF numlocal=1 numreplicas=0 timeout``: queue it on the commit's pipeline."""
    return ("WAITAOF", 1, 0, timeout_ms)


def check_waitaof(reply: Any, timeout_ms: int = WAITAOF_TIMEOUT_MS) -> None:
    """WAITAOF answers [local fsyncs, replica fsyncs]; anything but local >= 1 is not durable."""
    if isinstance(reply, Exception):
        raise QueueError(f"WAITAOF failed: {reply}") from reply
    try:
        local = int(reply[0])
    except (TypeError, ValueError, IndexError) as exc:
        raise QueueError(f"WAITAOF: unexpected reply {reply!r}") from exc
    if local < 1:
        raise QueueError(
            f"Redis did not confirm the AOF fsync within {timeout_ms} ms (WAITAOF replied {reply!r}); "
            "the job is not acknowledged: submit it again (the same id is a no-op if it was kept)"
        )
