"""bulkmail over ``rediss://`` with an ACL user: submit, serve and status all use the same URL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from engine.queue.embedded import RedisProcess
from tests.support.dns_server import DnsServer
from tests.support.ports import free_port
from tests.support.serve import Serve, cli
from tests.support.sinks import RecordingSink
from tests.support.tls import TestCa
from tests.support.waiting import wait_until


def tls_redis(directory: Path, ca: TestCa) -> tuple[RedisProcess, str]:
    directory.mkdir()
    cert = ca.ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    cert.private_key_pem.write_to_path(str(directory / "server.key"))
    ca_file = ca.ca_file(directory)
    port = free_port()
    server = RedisProcess(directory, port=0, extra={
        "tls-port": str(port),
        "tls-cert-file": str(directory / "server.pem"),
        "tls-key-file": str(directory / "server.key"),
        "tls-ca-cert-file": ca_file,
        "tls-auth-clients": "no",
    }, extra_lines=[
        # a user limited to bulkmail's keys, without the commands that could wipe or reconfigure the server
        "user default off",
        "user bulk on >s3cret ~bm:* &* +@all -@dangerous -flushall -flushdb -keys",
    ])
    url = f"rediss://bulk:s3cret@127.0.0.1:{port}/0?ssl_ca_certs={ca_file}&ssl_cert_reqs=required"
    return server, url


def test_rediss_with_an_acl_user_end_to_end(tmp_path: Path, dns_server: DnsServer, test_ca: TestCa,
                                              smtp_sink: Callable[..., RecordingSink]) -> None:
    server, url = tls_redis(tmp_path / "redis", test_ca)
    server.start()
    try:
        wait_until(lambda: cli(url, "status", "none").returncode == 4, 10, what="TLS Redis answering")
        sink = smtp_sink("127.0.0.2")
        dns_server.add_mx("tls.test", [(10, "mx.tls.test")])
        dns_server.add_a("mx.tls.test", ["127.0.0.2"])
        job_file = tmp_path / "job.json"
        job_file.write_text(json.dumps({"from": "a@sender.test", "text": "over TLS",
                                        "recipients": [f"u{i}@tls.test" for i in range(5)]}))
        with Serve(url, dns=dns_server.address, smtp_port=sink.port, workers=1, log=tmp_path / "serve.log"):
            result = cli(url, "submit", str(job_file), "--wait", "--timeout", "60")
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout.splitlines()[-1])["delivered"] == 5
        assert len(sink.messages) == 5
        wrong = cli(url.replace("s3cret", "wrong"), "status", "x")
        assert wrong.returncode != 0 and "error" in wrong.stderr
    finally:
        server.stop()
