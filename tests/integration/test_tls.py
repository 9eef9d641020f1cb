"""TLS passes through: with a rediss:// URL both services talk to a TLS-only Redis."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.localredis import LocalRedis
from tests.procs import Services, assert_exact, finish, numbers_file


@pytest.mark.timeout(60)
def test_a_run_over_tls_is_exact(tmp_path: Path, key_prefix: str) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test's certificate (apt-get install openssl)")
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem"), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    with LocalRedis(tls_dir=tls) as server:
        assert server.url.startswith("rediss://")
        services = Services(server.url, key_prefix, tmp_path)
        try:
            services.consumer("--threads", "2")
            path, total = numbers_file(tmp_path, 10_000)
            report = finish(services.producer("--input", str(path)))
            assert_exact(report, 10_000, total)
            # And without the CA the client refuses the server, rather than trusting anyone.
            plain = services.env(REDIS_URL=server.url.split("?")[0])
            result = subprocess.run([sys.executable, "-m", "producer_service", "--count", "10",
                                     "--timeout", "3"], capture_output=True, text=True,
                                    timeout=60, env=plain)
            assert result.returncode != 0
            assert "CERTIFICATE_VERIFY_FAILED" in result.stderr or "certificate" in result.stderr
        finally:
            services.close()
