"""A private redis-server for tests that need a password or TLS."""

from __future__ import annotations

import datetime
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "redis.crt", folder / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class PrivateRedis:
    """redis-server on free loopback ports, with a password, a TLS port and an append-only file.

    The append-only file is fsynced before each write is answered
    (``appendfsync always``): a server killed with SIGKILL (``kill()``) comes
    back by ``start()`` (same port, same folder) with every write it had
    acknowledged, as a clean ``stop()`` does (Redis flushes the file on SIGTERM).
    """

    def __init__(self, folder: Path, password: str) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (the test command installs it)")
        self.folder = folder
        self.password = password
        self.port, self.tls_port = free_port(), free_port()
        self.cert, self.key = self_signed_cert(folder)
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password,
                "--tls-port", str(self.tls_port), "--tls-cert-file", str(self.cert),
                "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.cert), "--tls-auth-clients", "no",
                "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, password=self.password)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)
        client.close()

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        return f"rediss://:{self.password}@127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.cert}&ssl_check_hostname=false"

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): Redis finishes its append-only file and exits."""
        self.proc.terminate()
        self.proc.wait(10)

    def kill(self) -> None:
        """A crash (SIGKILL): only what the append-only file already holds survives."""
        self.proc.kill()
        self.proc.wait(10)
