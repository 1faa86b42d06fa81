"""Node names and file names as Celery expands them."""

from __future__ import annotations

import socket

import pytest

from actors.worker_logging import expand_process_index
from facade import nodenames
from facade.nodenames import expand, node_name


@pytest.mark.parametrize(("given", "expected"), [
    (None, "celery@vm.example.com"),
    ("worker1", "celery@worker1"),
    ("worker1@%h", "worker1@vm.example.com"),
    ("w1@%n.example", "w1@vm.example"),
    ("w1@%n", "w1@vm"),
    ("%n@%d", "vm@example.com"),
    ("w%%1@%h", "w%1@vm.example.com"),
])
def test_a_node_name_is_expanded_as_celery_does(given, expected):
    assert node_name(given, host="vm.example.com") == expected


def test_file_names_keep_the_per_process_codes_for_each_process():
    pattern = nodenames.file_name("/var/log/%n/%p%I-%i.log", "w1@vm.example.com")
    assert pattern == "/var/log/w1/w1@vm.example.com%I-%i.log"
    assert expand_process_index(pattern, 0) == "/var/log/w1/w1@vm.example.com-0.log"
    assert expand_process_index(pattern, 3) == "/var/log/w1/w1@vm.example.com-3-3.log"


def test_file_names_take_host_and_domain_from_the_node_as_celerys_node_format():
    assert nodenames.file_name("%h|%n|%d|%p", "w1@vm.example.com") == \
        "vm.example.com|w1|example.com|w1@vm.example.com"


def test_a_literal_percent_survives_both_passes():
    pattern = expand("%%h-%h.log", host="vm", per_process=True)
    assert expand_process_index(pattern, 2) == "%h-vm.log"


def test_the_host_is_gethostname_as_in_celery(monkeypatch):
    # Celery's %h is socket.gethostname(), never a DNS-qualified name
    monkeypatch.setattr(socket, "gethostname", lambda: "web1")
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "web1.example.com")
    assert nodenames.hostname() == "web1"
    assert nodenames.node_name("worker1@%h") == "worker1@web1"
