"""The benchmark harness (bench/) in its quick mode: one system, real worker processes,
gunicorn, wrk and PostgreSQL, on the run's private Redis database."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from tests.conftest import PG_ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]

#: What one run of this project must produce, every one a number.
OURS_MEASURES = (
    "enqueue_msgs_s", "batch_enqueue_msgs_s", "drain_tasks_s", "drain_rss_mib", "drain_pss_mib",
    "idle_cpu_pct", "idle_redis_cmds_s", "mem_plain_rss_mib", "mem_plain_pss_mib", "mem_mtpc_rss_mib",
    "mem_mtpc_pss_mib", "web_requests", "web_rate", "web_errors", "web_p50_ms", "web_p99_ms", "web_max_ms",
    "e2e_p50_ms", "e2e_p99_ms", "app_worker_rss_mib", "app_worker_pss_mib",
)


def _compare(*args: str, timeout: float = 600, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.compare", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_a_quick_run_of_this_project_writes_the_table_the_json_and_the_plot_with_numbers(
        redis_url, tmp_path):
    # Given the quick scale, made smaller still, for this project alone on the run's Redis database
    # When the one command runs
    done = _compare("--quick", "--systems", "ours", "--redis", redis_url, "--pg-admin", PG_ADMIN_URL,
                    "--out", str(tmp_path), "--messages", "500", "--backlog", "1500", "--idle-seconds", "1",
                    "--idle-sends", "5", "--memory-tasks", "200", "--max-tasks-per-child", "100",
                    "--web-rate", "50", "--web-seconds", "2", "--e2e-messages", "3")

    # Then it succeeds and writes the raw JSON, with a number for every measure
    assert done.returncode == 0, done.stderr[-4000:]
    [raw_path] = tmp_path.glob("*.json")
    raw = json.loads(raw_path.read_text())
    [[ours]] = raw["runs"]
    assert raw["meta"]["errors"] == []
    for key in OURS_MEASURES:
        assert isinstance(ours[key], (int, float)) and math.isfinite(ours[key]), key
    assert ours["enqueue_msgs_s"] > 0 and ours["drain_tasks_s"] > 0 and ours["web_requests"] > 0
    assert ours["drain_rss_mib"] >= ours["drain_pss_mib"] > 0
    assert len(ours["idle_latencies_ms"]) == 5 and len(ours["state_latencies_ms"]) == 5
    assert len(ours["e2e_latencies_ms"]) == 3 and all(v > 0 for v in ours["e2e_latencies_ms"])

    # And the markdown table, one row per measure, with the numbers of the JSON
    [table] = tmp_path.glob("*.md")
    text = table.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(report.MEASURES), text
    assert "n/a" not in text, text
    assert f"| {report._fmt(ours['enqueue_msgs_s'])} |" in text

    # And the latency plot is a PNG
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_system_whose_run_breaks_makes_the_command_exit_1_naming_it(tmp_path):
    # Given a Redis URL where nothing listens
    done = _compare("--quick", "--systems", "dramatiq", "--redis", "redis://127.0.0.1:1/0",
                    "--out", str(tmp_path), timeout=120)

    # Then the command fails, says which run broke and why, and still writes its files
    assert done.returncode == 1
    assert "run 1, dramatiq: the Redis database redis://127.0.0.1:1/0 cannot be used" in done.stderr
    assert "Broken measurements:" in next(tmp_path.glob("*.md")).read_text()


def test_this_project_is_paired_with_every_peer_and_the_facades_shapes_with_celerys():
    systems = ["ours", "dramatiq", "celery-prefork", "celery-threads", "ours-prefork", "ours-threads"]
    assert report.pairs(systems) == [("ours", "dramatiq"), ("ours", "celery-prefork"), ("ours", "celery-threads"),
                                     ("ours-prefork", "celery-prefork"), ("ours-threads", "celery-threads")]
    assert report.pairs(["dramatiq", "celery-threads"]) == []


def test_an_unknown_system_or_a_bad_knob_is_refused_with_exit_2(tmp_path):
    for args, message in ((["--systems", "ours,rq"], "unknown system(s) rq"),
                          (["--messages", "0"], "--messages must be positive"),
                          (["--runs", "0"], "--runs must be at least 1")):
        done = _compare(*args, "--no-web", "--out", str(tmp_path), timeout=60)
        assert done.returncode == 2, args
        assert message in done.stderr, done.stderr


def test_without_wrk_the_web_path_is_refused_at_once_saying_how_to_install_it(tmp_path):
    # Given a PATH on which there is no wrk
    env = {**os.environ, "PATH": str(tmp_path)}

    # When the web path is asked for (this project is among the systems), it stops before measuring
    done = _compare("--quick", "--systems", "ours", "--out", str(tmp_path / "out"), env=env, timeout=60)
    assert done.returncode == 2
    assert "wrk is not installed" in done.stderr and "apt-get install wrk" in done.stderr
    assert not (tmp_path / "out").exists()


def test_ratios_pair_run_i_of_this_project_with_run_i_of_the_peer():
    # Given two runs where the peer's speed changed between runs
    runs = [[{"system": "ours", "drain_tasks_s": 200.0}, {"system": "dramatiq", "drain_tasks_s": 100.0}],
            [{"system": "ours", "drain_tasks_s": 300.0}, {"system": "dramatiq", "drain_tasks_s": 300.0}]]

    # When they are summarized
    summary = report.summarize(runs, ["ours", "dramatiq"])

    # Then each ratio is of one run's pair (2.0 and 1.0), not of the medians (250 / 200)
    ratio = summary["drain_tasks_s"]["ratios"]["ours/dramatiq"]
    assert ratio["runs"] == [2.0, 1.0]
    assert ratio["median"] == 1.5 and (ratio["min"], ratio["max"]) == (1.0, 2.0)
    assert summary["drain_tasks_s"]["values"]["ours"]["median"] == 250.0
    assert "| 250 (200-300) | 200 (100-300) | 1.50x (1.00-2.00) |" in report.table(
        summary, ["ours", "dramatiq"], {"messages": 20000})


def test_percentiles_take_the_nearest_rank():
    from bench.procs import percentile

    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([3.0], 99) == 3.0


def test_the_readme_section_between_the_markers_is_replaced_and_the_rest_kept(tmp_path):
    # Given a README with a last-results section
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\n## Last results\n\n{report.START}\nold table\n{report.END}\n\nafter\n")

    # When a run's section is written into it, twice
    report.update_readme("| measure | ours |\n|---|---|\n| drain | 3,000 |", readme)
    report.update_readme("| measure | ours |\n|---|---|\n| drain | 4,000 |", readme)

    # Then only the last table stands between the markers, and the text around them is kept
    text = readme.read_text()
    assert "old table" not in text and "3,000" not in text
    assert text == (f"# Benchmarks\n\n## Last results\n\n{report.START}\n| measure | ours |\n|---|---|\n"
                    f"| drain | 4,000 |\n{report.END}\n\nafter\n")


def test_a_readme_without_the_markers_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n")
    with pytest.raises(ValueError, match="no <!-- last-results:start -->"):
        report.update_readme("table", readme)
    assert readme.read_text() == "# Benchmarks\n"
