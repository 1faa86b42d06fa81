"""``assistant demo``: signs a fixture, posts it to a real web server, waits for the stand-in's reply."""

from __future__ import annotations

import dataclasses
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from app.devtools.demo import DemoError, find_fixture, run_demo, sign, standin_url_file
from app.devtools.local import LOCAL_APP_SECRET
from app.devtools.whatsapp_standin import WhatsAppStandin
from app.manage import main
from app.web import create_app
from app.whatsapp import WhatsAppClient
from tests.support import fixtures


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def standin():
    with WhatsAppStandin() as server:
        yield server


class Pipeline:
    """Stands in for the workers until the conversation pipeline lands: when
    asked (``replying``), a buffer check sends a reply through the real client."""

    def __init__(self, standin_url):
        self.client = WhatsAppClient(standin_url, "t", "106540352242922")
        self.replying = False
        self.calls = []

    def __call__(self, task_name, args=(), kwargs=None, **options):
        self.calls.append((task_name, args))
        if self.replying and task_name == "check_buffer_task":
            to = args[0]
            self.client.send_text(to=None if to.startswith("BR.") else to,
                                  recipient=to if to.startswith("BR.") else None, text=f"Demo reply to {to}")


@pytest.fixture
def web(redis_client, db, config, standin):
    """The real Falcon app on a real HTTP server, signing secret = the local one."""
    pipeline = Pipeline(standin.url)
    app = create_app(dataclasses.replace(config, whatsapp_app_secret=LOCAL_APP_SECRET), enqueue=pipeline,
                     redis_client=redis_client, sessions=db)
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", pipeline
    server.shutdown()
    server.server_close()
    pipeline.client.close()


def test_the_demo_signs_the_raw_bytes_as_meta_does():
    body = fixtures.raw("text_non_ascii.json")
    assert sign(body, "s") == fixtures.sign(body, "s")
    assert find_fixture("text").read_bytes() == fixtures.raw("text.json") == find_fixture("text.json").read_bytes()
    with pytest.raises(DemoError, match="no fixture 'nope'; pick one of: contacts"):
        find_fixture("nope")


def test_the_demo_prints_the_reply_the_standin_received(web, standin):
    url, pipeline = web
    pipeline.replying = True
    result = run_demo(find_fixture("text"), webhook_url=url, standin_url=standin.url, secret=LOCAL_APP_SECRET,
                      timeout_s=20)
    assert result.webhook_status == 200 and result.webhook_answer["messages"] == 1
    assert [r["body"]["text"]["body"] for r in result.replies] == ["Demo reply to 16505551234"]
    assert pipeline.calls == [("check_buffer_task", ("16505551234", 1))]


def test_the_demo_waits_for_every_customer_of_a_multi_message_body(web, standin):
    url, pipeline = web
    pipeline.replying = True
    result = run_demo(find_fixture("multi_message"), webhook_url=url, standin_url=standin.url,
                      secret=LOCAL_APP_SECRET, timeout_s=20)
    assert {r["body"]["to"] for r in result.replies} == {"16505551234", "447700900123"}


def test_without_a_reply_the_demo_stops_at_its_timeout_with_a_clear_error(web, standin):
    url, _ = web
    with pytest.raises(DemoError, match=r"no reply to 16505551234 reached the WhatsApp stand-in within 0.5 s"):
        run_demo(find_fixture("text"), webhook_url=url, standin_url=standin.url, secret=LOCAL_APP_SECRET,
                 timeout_s=0.5)


def test_a_replayed_fixture_is_a_duplicate_and_fresh_sends_it_anew(web, standin):
    url, pipeline = web
    pipeline.replying = True
    run_demo(find_fixture("text"), webhook_url=url, standin_url=standin.url, secret=LOCAL_APP_SECRET, timeout_s=20)
    with pytest.raises(DemoError, match="--fresh"):
        run_demo(find_fixture("text"), webhook_url=url, standin_url=standin.url, secret=LOCAL_APP_SECRET,
                 timeout_s=20)
    again = run_demo(find_fixture("text"), webhook_url=url, standin_url=standin.url, secret=LOCAL_APP_SECRET,
                     timeout_s=20, fresh=True)
    assert len(again.replies) == 1


def test_a_wrong_secret_is_reported_with_the_webhooks_answer(web, standin):
    url, _ = web
    with pytest.raises(DemoError, match="the webhook answered 401"):
        run_demo(find_fixture("text"), webhook_url=url, standin_url=standin.url, secret="wrong", timeout_s=1)


def test_the_cli_exits_non_zero_with_the_reason_and_zero_for_a_status(web, standin, tmp_path, monkeypatch, capsys):
    url, _ = web
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("WHATSAPP_APP_SECRET", raising=False)
    # No stand-in URL file and no --standin: a clear message
    assert main(["demo", "--url", url]) == 1
    assert "no WhatsApp stand-in is running" in capsys.readouterr().err
    # The URL `assistant run` writes is found; a text without a worker times out
    standin_url_file(tmp_path).write_text(standin.url + "\n")
    assert main(["demo", "text", "--url", url, "--timeout", "0.3"]) == 1
    assert "reached the WhatsApp stand-in within 0.3 s" in capsys.readouterr().err
    # A status expects no reply
    assert main(["demo", "status_read", "--url", url]) == 0
    assert "No reply expected" in capsys.readouterr().out
