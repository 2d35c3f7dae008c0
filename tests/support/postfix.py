"""Real Postfix peers: smtp-sink processes and private Postfix MTAs that tests start and stop.

Both come from Debian's ``postfix`` package. When a binary or the postfix user is missing,
``start()`` fails the test naming the package: these peers are never skipped. Everything
listens on 127.0.0.x only, and only processes started here are signalled, by PID.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pty
import pwd
import re
import secrets
import select
import shutil
import signal
import smtplib
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tests.support.ports import free_port
from tests.support.waiting import wait_until

SBIN = Path("/usr/sbin")
INSTALL_HINT = (
    "install Debian's 'postfix' package: debconf preseed "
    "'postfix postfix/main_mailer_type select No configuration', then apt-get install postfix"
)
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


def require_postfix_binary(name: str) -> Path:
    path = SBIN / name
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is missing: {INSTALL_HINT}")
    return path


def is_listening(host: str, port: int, pid: int) -> bool:
    """Whether process ``pid`` holds a socket listening on host:port, read from /proc, so that
    probing opens no SMTP session (no skewed counters) and another listener cannot fool it."""
    want = f"{''.join(f'{int(b):02X}' for b in reversed(host.split('.')))}:{port:04X}"
    with open("/proc/net/tcp") as table:
        inodes = {f"socket:[{f[9]}]" for f in (line.split() for line in table) if len(f) > 9 and f[1] == want and f[3] == "0A"}
    with contextlib.suppress(OSError):
        return any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir())
    return False


def _process_alive(pid: int, started: str | None = None) -> bool:
    """True if ``pid`` runs and is the same process (start time) we saw; zombies count as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and (started is None or fields[19] == started)


def _children(pid: int) -> dict[int, str]:
    """Direct children of ``pid`` with their start times, to clean up after a master that died."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == str(pid):
                found[int(entry.name)] = fields[19]
    return found


def _all_gone(processes: Mapping[int, str]) -> bool:
    return not any(_process_alive(pid, started) for pid, started in processes.items())


def _kill(pid: int, started: str | None, sig: signal.Signals = signal.SIGKILL) -> None:
    if _process_alive(pid, started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# -------------------------------------------------------------------------------------------------
# smtp-sink


@dataclass(frozen=True)
class SinkOptions:
    """smtp-sink switches. Command names are SMTP verbs plus CONNECT and "." (end of data)."""

    soft_reject: tuple[str, ...] = ()  # -r: "450 4.3.0 Error: command failed"; hides PIPELINING
    hard_reject: tuple[str, ...] = ()  # -f: "500 5.3.0 Error: command failed"; hides PIPELINING
    soft_reply: str | None = None  # -b: replaces the -r reply, e.g. "451 4.7.1 Greylisted"
    hard_reply: str | None = None  # -B: replaces the -f reply
    drop: tuple[str, ...] = ()  # -q: close the connection without replying
    close_421: tuple[str, ...] = ()  # -Q: "421 4.0.0 Server closing connection", then close
    data_delay: int = 0  # -w: whole seconds before the 354 to DATA
    pipelining: bool = True  # -p hides it
    esmtp: bool = True  # -e: EHLO gets "500 5.5.1 unknown command"
    enhanced_status: bool = True  # -E
    eightbitmime: bool = True  # -8
    dsn: bool = True  # -N
    dump: bool = False  # -D: record every transaction, read back with transactions()
    hostname: str | None = None  # -h
    max_connections: int | None = None  # -m (default 256)
    extra_args: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        args: list[str] = []
        for flag, commands in (("-r", self.soft_reject), ("-f", self.hard_reject), ("-q", self.drop), ("-Q", self.close_421)):
            if commands:
                args += [flag, ",".join(commands)]
        for flag, value in (("-b", self.soft_reply), ("-B", self.hard_reply), ("-h", self.hostname)):
            if value is not None:
                args += [flag, value]
        if self.data_delay:
            args += ["-w", str(self.data_delay)]
        if self.max_connections is not None:
            args += ["-m", str(self.max_connections)]
        hidden = {"-p": self.pipelining, "-e": self.esmtp, "-E": self.enhanced_status, "-8": self.eightbitmime, "-N": self.dsn}
        return args + [flag for flag, shown in hidden.items() if not shown] + list(self.extra_args)


@dataclass(frozen=True)
class SinkCounters:
    sessions: int  # ended sessions
    quits: int
    messages: int  # end-of-data seen, even when "." itself was rejected (-r/-f .)


@dataclass(frozen=True)
class SinkTransaction:
    """One transaction as smtp-sink dumped it: what the client sent, accepted or not.

    smtp-sink's dump drops every CR and the dot of a stuffed line, so ``message`` has LF
    line ends and is unstuffed; a bare LF in the input is indistinguishable from CRLF here.
    """

    client_addr: str
    proto: str  # "ESMTP" after EHLO, "SMTP" after HELO
    helo: str | None
    mail_args: str  # "<a@x> SIZE=12"
    rcpt_args: tuple[str, ...]  # one per RCPT command, in order
    message: bytes

    @property
    def sender(self) -> str:
        return self.mail_args.split(">", 1)[0].lstrip("<")

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(args.split(">", 1)[0].lstrip("<") for args in self.rcpt_args)


class SmtpSinkProcess:
    """``/usr/sbin/smtp-sink`` on ``host:port`` (port 0 picks a free one), with counters (-c)."""

    def __init__(self, host: str = "127.0.0.2", port: int = 0, options: SinkOptions | None = None) -> None:
        self.host = host
        self.port = port
        self.options = options or SinkOptions()
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._marker = f"X-Sink-Transaction: {secrets.token_hex(8)}\n".encode()

    def __repr__(self) -> str:
        state = "running" if self._proc and self._proc.poll() is None else "stopped"
        return f"<SmtpSinkProcess {self.host}:{self.port} {state} {' '.join(self.options.argv())}>"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self, timeout: float = 10.0) -> SmtpSinkProcess:
        binary = require_postfix_binary("smtp-sink")
        self._workdir = Path(tempfile.mkdtemp(prefix="bulkmail-smtp-sink-"))
        argv = [str(binary), "-c", *self.options.argv()]
        if os.geteuid() == 0:  # smtp-sink refuses to run as root without -u; nobody must write the dump
            argv += ["-u", "nobody"]
            nobody = pwd.getpwnam("nobody")
            os.chown(self._workdir, nobody.pw_uid, nobody.pw_gid)
        if self.options.dump:
            argv += ["-D", str(self._workdir / "transactions"), "-S", self._marker.decode().replace("\n", "\\n")]
        auto_port = self.port == 0
        for _ in range(3 if auto_port else 1):  # a picked port can be taken before smtp-sink binds it
            if auto_port:
                self.port = free_port(self.host)
            if self._launch([*argv, f"{self.host}:{self.port}", "256"], timeout):
                return self
        error = AssertionError(f"smtp-sink did not start on {self.host}:{self.port}: {self._output('stderr')}")
        self.stop()
        raise error

    def _launch(self, argv: list[str], timeout: float) -> bool:
        assert self._workdir is not None
        with open(self._workdir / "stdout", "wb") as out, open(self._workdir / "stderr", "wb") as err:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        proc = self._proc
        def up_or_exited() -> bool:
            return proc.poll() is not None or is_listening(self.host, self.port, proc.pid)

        wait_until(up_or_exited, timeout, what=f"smtp-sink on {self.host}:{self.port}")
        return proc.poll() is None

    def _output(self, name: str) -> str:
        path = (self._workdir or Path("/nonexistent")) / name
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def counters(self) -> SinkCounters:
        """The latest -c line; smtp-sink rewrites it (CR-separated) at each "." and session end."""
        found = re.findall(r"sess=(\d+) quit=(\d+) mesg=(\d+)", self._output("stdout"))
        return SinkCounters(*map(int, found[-1])) if found else SinkCounters(0, 0, 0)

    def transactions(self) -> list[SinkTransaction]:
        """Every complete transaction so far (smtp-sink appends one only after its "."), in order."""
        if not self.options.dump:
            raise AssertionError("start the sink with dump=True to read transactions")
        path = (self._workdir or Path("/nonexistent")) / "transactions"
        raw = path.read_bytes() if path.exists() else b""
        return [_parse_dump(chunk) for chunk in raw.split(self._marker)[1:]]

    def wait_for_messages(self, count: int, timeout: float = 15.0) -> list[SinkTransaction]:
        """Wait until ``count`` transactions were dumped (or counted, without a dump)."""
        if not self.options.dump:
            wait_until(lambda: self.counters().messages >= count, timeout, what=f"{count} messages at {self!r}")
            return []

        def enough() -> list[SinkTransaction]:
            found = self.transactions()
            return found if len(found) >= count else []  # [] is falsy: keep waiting

        return wait_until(enough, timeout, what=f"{count} messages at {self!r}")


def _parse_dump(chunk: bytes) -> SinkTransaction:
    head, _, rest = chunk.partition(b"\nReceived: ")
    fields: dict[str, list[str]] = {}
    for line in head.decode(errors="replace").splitlines():
        name, _, value = line.partition(": ")
        fields.setdefault(name, []).append(value)
    message = rest.split(b"\n", 3)[3]  # the rest of smtp-sink's own three-line Received header
    return SinkTransaction(
        client_addr=fields["X-Client-Addr"][0],
        proto=fields["X-Client-Proto"][0],
        helo=fields.get("X-Helo-Args", [None])[0],
        mail_args=fields["X-Mail-Args"][0],
        rcpt_args=tuple(fields.get("X-Rcpt-Args", [])),
        message=message[:-1],  # the final "\n" is the LF of the end-of-data line
    )


# -------------------------------------------------------------------------------------------------
# A private Postfix MTA

_SERVICES = """\
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
proxywrite unix - - n -     1 proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
"""
# First stable releases with smtpd_forbid_bare_newline = normalize|reject (CVE-2023-51764 follow-up);
# the earlier fix (3.8.4, 3.7.9, 3.6.13, 3.5.23) only knows yes|no. 3.9 and later have both.
_REJECT_SINCE = {(3, 5): 24, (3, 6): 14, (3, 7): 10, (3, 8): 5}


def bare_newline_setting(version: str) -> str:
    """The strictest smtpd_forbid_bare_newline value this Postfix version understands."""
    major, minor, patch = (int(part) for part in (version.split(".") + ["0", "0"])[:3])
    if (major, minor) >= (3, 9) or patch >= _REJECT_SINCE.get((major, minor), 1 << 30):
        return "reject"
    return "yes"


def _run(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    """Run a Postfix command with a pty as stderr: Postfix commands write diagnostics only to a tty."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, timeout=timeout, check=False)
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    with contextlib.suppress(OSError):  # EIO once every writer is gone
        while select.select([master], [], [], 0)[0] and (chunk := os.read(master, 65536)):
            chunks.append(chunk)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def _postconf_default(name: str) -> str:
    rc, out = _run([str(require_postfix_binary("postconf")), "-dh", name], 30)
    value = out.strip()
    if rc != 0 or not value or "unknown parameter" in value:
        raise AssertionError(f"postconf -d {name} failed ({rc}): {value}")
    return value


class PostfixInstance:
    """A Postfix MTA with its own config, queue and data directories under /tmp and no chroot.

    smtpd listens on ``host:port`` (port 0 picks a free one). Everything it accepts is relayed by
    SMTP: to ``relay_to`` (relayhost), or per domain through ``routes`` (transport_maps), so a test
    reads what Postfix accepted and re-sent at a recording smtp-sink.
    """

    def __init__(
        self,
        host: str = "127.0.0.10",
        port: int = 0,
        *,
        relay_to: SmtpSinkProcess | tuple[str, int] | None = None,
        routes: Mapping[str, tuple[str, int]] | None = None,
        forbid_bare_newline: str | None = None,  # None: "reject" where supported, else "yes"
        main_cf: Mapping[str, str] | None = None,  # overrides, e.g. queue_run_delay for long runs
    ) -> None:
        self.host = host
        self.port = port
        self.relay_sink = relay_to if isinstance(relay_to, SmtpSinkProcess) else None
        self.relay_to = relay_to.address if isinstance(relay_to, SmtpSinkProcess) else relay_to
        self.routes = dict(routes or {})
        self.forbid_bare_newline = forbid_bare_newline
        self.main_cf_overrides = dict(main_cf or {})
        self.version = ""
        self.base: Path | None = None
        self._master: tuple[int, str] | None = None

    def __repr__(self) -> str:
        state = "running" if self._master and _process_alive(*self._master) else "stopped"
        target = f"relayhost={self.relay_to}" if self.relay_to else f"{len(self.routes)} routes"
        return f"<PostfixInstance {self.version} {self.host}:{self.port} {state} {target}>"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def config_dir(self) -> Path:
        assert self.base is not None, "start() first"
        return self.base / "etc"

    @property
    def queue_dir(self) -> Path:
        assert self.base is not None, "start() first"
        return self.base / "spool"

    def start(self, timeout: float = 30.0) -> PostfixInstance:
        postfix = str(require_postfix_binary("postfix"))
        if os.geteuid() != 0:
            raise AssertionError("a private Postfix must be started as root (its master runs as root)")
        try:
            owner = pwd.getpwnam("postfix")
            grp.getgrnam("postdrop")
        except KeyError as missing:
            raise AssertionError(f"user/group {missing} is missing: {INSTALL_HINT}") from None
        self.version = _postconf_default("mail_version")
        _postconf_default("smtpd_forbid_bare_newline")  # absent before 3.5.23: no smuggling defence
        self.forbid_bare_newline = self.forbid_bare_newline or bare_newline_setting(self.version)
        self.base = Path(tempfile.mkdtemp(prefix="bulkmail-postfix-"))
        self.base.chmod(0o755)  # daemons running as postfix reach data/ through it
        for name in ("etc", "spool", "data"):
            (self.base / name).mkdir()
        os.chown(self.base / "data", owner.pw_uid, owner.pw_gid)
        (self.base / "data").chmod(0o700)
        try:
            self._start_master(postfix, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_master(self, postfix: str, timeout: float) -> None:
        auto_port = self.port == 0
        for _ in range(3 if auto_port else 1):  # a picked port can be taken before master binds it
            if auto_port:
                self.port = free_port(self.host)
            self._write_config()
            rc, out = _run([postfix, "-c", str(self.config_dir), "start"], timeout)
            if rc == 0:
                break
        else:
            raise AssertionError(f"postfix start exited {rc}:\n{out}\n{self.diagnostics()}")
        try:
            def listening() -> bool:
                master = self._read_master()
                return master is not None and is_listening(self.host, self.port, master[0])

            wait_until(listening, timeout, what=f"{self!r} to listen")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnostics()}") from None

    def _write_config(self) -> None:
        assert self.base is not None
        cf = {
            "compatibility_level": "3.6", "biff": "no", "append_dot_mydomain": "no",
            "queue_directory": str(self.queue_dir), "data_directory": str(self.base / "data"),
            "maillog_file": str(self.base / "maillog"), "maillog_file_prefixes": str(self.base),
            # The host name differs from every peer's greeting, so Postfix raises no mail loop alarm.
            "myhostname": f"postfix-{self.port}.bulkmail.test", "mydomain": "bulkmail.test", "myorigin": "$myhostname",
            "mydestination": "", "local_recipient_maps": "", "alias_maps": "", "alias_database": "",
            # Postfix accepts only addresses of real interfaces here; smtpd binds 127.0.0.x in master.cf.
            "inet_interfaces": "loopback-only", "inet_protocols": "ipv4", "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_forbid_bare_newline": str(self.forbid_bare_newline),
            "smtpd_forbid_bare_newline_exclusions": "",  # the default, $mynetworks, exempts every test client
            "in_flow_delay": "0",  # the default 1 s throttles injection
            "smtp_dns_support_level": "disabled", "smtpd_peername_lookup": "no", "smtpd_error_sleep_time": "0",
        }
        if self.relay_to:
            cf["relayhost"] = "[{}]:{}".format(*self.relay_to)
        if self.routes:
            transport = "".join(f"{domain} smtp:[{host}]:{port}\n" for domain, (host, port) in self.routes.items())
            (self.config_dir / "transport").write_text(transport)
            cf["transport_maps"] = f"texthash:{self.config_dir / 'transport'}"
        cf.update(self.main_cf_overrides)
        (self.config_dir / "main.cf").write_text("".join(f"{key} = {value}\n" for key, value in cf.items()))
        smtpd = f"{self.host}:{self.port} inet n - n - - smtpd\n"
        (self.config_dir / "master.cf").write_text(smtpd + _SERVICES)
        for path in self.config_dir.iterdir():  # Postfix re-reads a file changed within the last
            os.utime(path, (1e9, 1e9))  # second every 300 ms; an old mtime saves ~2 s per start

    def _read_master(self) -> tuple[int, str] | None:
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().strip())
            started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, ValueError, IndexError):
            return None
        self._master = (pid, started)
        return self._master

    def stop(self, timeout: float = 20.0) -> None:
        """``postfix stop``; then SIGKILL, by PID, a master or daemon of ours that outlived it."""
        master = (self._read_master() if self.base else None) or self._master
        if master and _process_alive(*master):
            children = _children(master[0])
            with contextlib.suppress(subprocess.TimeoutExpired):
                _run([str(SBIN / "postfix"), "-c", str(self.config_dir), "stop"], timeout)
            for group in ({master[0]: master[1]}, children):
                try:
                    wait_until(partial(_all_gone, group), timeout, what="postfix to exit")
                except AssertionError:
                    for pid, started in group.items():
                        _kill(pid, started)
        self._master = None
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def log(self) -> str:
        path = (self.base or Path("/nonexistent")) / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def diagnostics(self, lines: int = 60) -> str:
        return "--- Postfix maillog (last lines) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def send(self, mail_from: str, recipients: Iterable[str], message: bytes, timeout: float = 30.0) -> dict[str, tuple[int, bytes]]:
        """Inject one message through smtpd with the stdlib client; returns smtplib's refused map."""
        with smtplib.SMTP(self.host, self.port, timeout=timeout) as client:
            return client.sendmail(mail_from, list(recipients), message)

    def postqueue(self, *args: str, timeout: float = 30.0) -> str:
        return _run([str(require_postfix_binary("postqueue")), "-c", str(self.config_dir), *args], timeout)[1]

    def queue_counts(self) -> dict[str, int]:
        """Queue files per queue, read from the spool (cheaper than postqueue for 100,000 messages)."""
        return {queue: sum(len(files) for _, _, files in os.walk(self.queue_dir / queue)) for queue in QUEUES}

    def wait_until_queue_empty(self, timeout: float = 60.0) -> None:
        try:
            wait_until(lambda: not any(self.queue_counts().values()), timeout, interval=0.05, what=f"{self!r} queue to empty")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.queue_counts()}\n{self.postqueue('-p')}\n{self.diagnostics()}") from None
