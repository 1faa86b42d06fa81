"""The Prometheus configuration and alert rules: promtool accepts them, and the rule tests bite."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.files import PROMETHEUS

#: The metric names the lead fixed for the web app, the worker nodes and the monitor.
KNOWN_METRICS = {
    "assistant_webhook_requests_total", "assistant_webhook_request_duration_seconds",
    "assistant_tasks_enqueued_total", "assistant_queue_messages", "assistant_worker_nodes",
    "assistant_tasks_received_total", "assistant_tasks_succeeded_total", "assistant_tasks_failed_total",
    "assistant_tasks_retried_total", "assistant_task_duration_seconds", "assistant_tasks_in_progress",
    "assistant_task_time_limit_hits_total", "assistant_worker_child_restarts_total",
    "flower_events_total", "flower_task_runtime_seconds", "flower_worker_online",
    "flower_worker_number_of_currently_executing_tasks", "assistant_queue_oldest_waiting_age_seconds",
}

ALERTS = ["AssistantQueueBacklog", "AssistantNoWorker", "AssistantTaskFailureRatio",
          "AssistantDeadLettersGrowing", "AssistantTargetDown"]


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: ./test.sh installs Debian's prometheus package (as root)"
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for r in g["rules"]]


def test_promtool_accepts_the_configuration_and_finds_its_rule_file():
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_promtool_accepts_the_alert_rules():
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_the_rule_unit_tests_pass():
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("alert", ALERTS)
@pytest.mark.parametrize("broken", ["vector(0) > 1", "vector(1)"], ids=["never-fires", "always-fires"])
def test_the_rule_tests_catch_an_alert_that_never_or_always_fires(alert, broken, tmp_path):
    # Given the rules with one alert's expression replaced
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                rule["expr"] = broken
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document))
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path)
    # When the rule tests run against them
    result = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    # Then they fail, naming that alert
    assert result.returncode != 0
    assert f"alertname: {alert}," in result.stdout + result.stderr


def test_the_alerts_are_the_ones_operations_asked_for():
    rules = {r["alert"]: r for r in _rules()}
    assert sorted(rules) == sorted(ALERTS)
    backlog = rules["AssistantQueueBacklog"]["expr"]
    assert 'state="waiting"' in backlog and "> 1000" in backlog
    assert rules["AssistantQueueBacklog"]["for"] == "5m"
    assert rules["AssistantNoWorker"]["for"] == "1m"
    assert "0.05" in rules["AssistantTaskFailureRatio"]["expr"]
    assert 'state="dead"' in rules["AssistantDeadLettersGrowing"]["expr"]
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_rules_use_only_the_metric_names_the_exporters_have():
    used = set()
    for rule in _rules():
        used |= set(re.findall(r"\b((?:assistant|flower)_[a-z_]+)\b", rule["expr"]))
    assert used and used <= KNOWN_METRICS, used - KNOWN_METRICS


def test_prometheus_scrapes_the_web_app_every_worker_node_and_the_monitor():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"assistant-web", "assistant-worker", "assistant-monitor"}
    ports = {name: {t.rsplit(":", 1)[1] for sc in job["static_configs"] for t in sc["targets"]}
             for name, job in jobs.items()}
    assert ports == {"assistant-web": {"5000"}, "assistant-worker": {"9191"}, "assistant-monitor": {"5555"}}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in jobs.values())
    # The target-down alert covers exactly these jobs
    target_down = next(r for r in _rules() if r["alert"] == "AssistantTargetDown")
    assert 'job=~"assistant-.*"' in target_down["expr"]
