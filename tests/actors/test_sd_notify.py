"""systemd's readiness protocol: a real AF_UNIX datagram socket in place of systemd."""

from __future__ import annotations

import array
import logging
import os
import signal
import socket
import struct
import tempfile
import uuid

import pytest

from actors import sd_notify
from tests.support.celery_worker import START_TIMEOUT_S, CeleryWorker


class _FakeSystemd:
    """A datagram socket like systemd's: it reads each datagram with its sender's pid."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.address = address

    def receive(self, timeout_s: float = START_TIMEOUT_S) -> tuple[str, int]:
        """The next datagram's text and the pid that sent it (SCM_CREDENTIALS)."""
        self.sock.settimeout(timeout_s)
        creds = struct.calcsize("3i")
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds))
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = array.array("i", payload[:creds])[0]
        return data.decode(), pid

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir():
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sdn-", dir="/tmp") as path:
        yield path


def test_notify_sends_its_lines_as_one_datagram_to_a_socket_path(short_dir):
    # Given systemd's socket at a path
    systemd = _FakeSystemd(os.path.join(short_dir, "notify"))
    try:
        # When a node says it is ready
        sent = sd_notify.notify(systemd.address, "READY=1", "STATUS=w1@host ready.")
        # Then one datagram holds both lines, from this process
        assert sent is True
        assert systemd.receive(timeout_s=5) == ("READY=1\nSTATUS=w1@host ready.", os.getpid())
    finally:
        systemd.close()


def test_notify_reaches_a_socket_in_the_abstract_namespace():
    systemd = _FakeSystemd(f"@assistant-test-{uuid.uuid4().hex}")
    try:
        assert sd_notify.notify(systemd.address, "STOPPING=1") is True
        assert systemd.receive(timeout_s=5)[0] == "STOPPING=1"
    finally:
        systemd.close()


@pytest.mark.parametrize("address", [None, ""])
def test_without_a_socket_notify_does_nothing(address):
    assert sd_notify.notify(address, "READY=1") is False


def test_a_socket_that_is_gone_is_logged_not_raised(short_dir, caplog):
    # Given a NOTIFY_SOCKET nobody listens on
    missing = os.path.join(short_dir, "gone")
    # When the node notifies
    with caplog.at_level(logging.WARNING, logger="actors.sd_notify"):
        sent = sd_notify.notify(missing, "READY=1")
    # Then it goes on, and says why systemd did not hear it
    assert sent is False
    assert f"Could not notify systemd at {missing} (READY=1)" in caplog.text


def test_the_config_reads_notify_socket_from_the_environment():
    from app.config import Config

    assert Config.from_env({"NOTIFY_SOCKET": "/run/systemd/notify"}).notify_socket == "/run/systemd/notify"
    assert Config.from_env({}).notify_socket is None


@pytest.mark.slow
@pytest.mark.parametrize("line", [
    "worker -l info -P solo -Q default,state",
    "worker -l info -c 2 -Q default,state",
])
def test_a_worker_node_says_ready_then_stopping_from_its_main_process(line, tmp_path, global_broker, redis_client):
    # Given a socket standing in for systemd's, named in NOTIFY_SOCKET
    systemd = _FakeSystemd(f"@assistant-test-{uuid.uuid4().hex}")
    worker = CeleryWorker(line.split(), tmp_path / "worker.log", env={"NOTIFY_SOCKET": systemd.address})
    try:
        # When the node starts
        ready, sender = systemd.receive()
        # Then READY=1 comes from the main process (NotifyAccess=main), once the node printed `ready.`
        assert ready.splitlines()[0] == "READY=1", worker.output()
        assert sender == worker.pid
        assert " ready." in worker.output()
        assert any(line.startswith("STATUS=celery@") for line in ready.splitlines())

        # When systemd stops it (SIGTERM to the main process, KillMode=mixed)
        worker.signal(signal.SIGTERM)
        stopping, sender = systemd.receive()
        # Then it says STOPPING=1 at once, and exits cleanly after its warm shutdown
        assert stopping.splitlines()[0] == "STOPPING=1"
        assert sender == worker.pid
        assert worker.wait() == 0, worker.output()
        assert "Warm shutdown" in worker.output()
    finally:
        worker.kill_all()
        systemd.close()
