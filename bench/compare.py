"""Every benchmark of the issue, for this project, stock Dramatiq and Celery, side by side.

    .venv/bin/python -m bench.compare [--runs 3] [--quick] [--systems ours,dramatiq,...] [--update-readme]

Runs are interleaved (run 1 of every system, then run 2 of every system,
...), each system on a private ``redis-server`` of its own started for
that run (or, with ``--redis URL``, on that database, flushed before and
after).  Writes ``<out>/<timestamp>.json`` (every run's raw numbers),
``<out>/<timestamp>.md`` (the table: median (min-max) per system, and
this project / each peer, run i against run i) and ``<out>/latency.png``.
Exits 1 when any measurement broke (the files still show the others).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench import report
from bench.procs import BenchError, RedisServer
from bench.queue_bench import Scale
from bench.run_one import scale_json
from bench.systems import PY, ROOT, SYSTEMS
from bench.web_bench import WRK_HELP

DEFAULT_SYSTEMS = ("ours", "dramatiq", "celery-prefork", "celery-threads")

_KNOBS = {
    "messages": "no-op tasks enqueued and drained (default 20,000)",
    "backlog": "bulk 10 ms tasks waiting under the state tasks (default 10,000)",
    "state_tasks": "state tasks sent 100 ms apart (default 50)",
    "idle_seconds": "idle cost window in seconds (default 10)",
    "idle_sends": "sends on an idle worker (default 50)",
    "memory_tasks": "tasks before the prefork memory reading (default 10,000)",
    "max_tasks_per_child": "--max-tasks-per-child of the memory reading (default 1,000)",
    "web_rate": "POST /webhook requests per second (default 500)",
    "web_seconds": "seconds of webhook load (default 30)",
    "e2e_messages": "end-to-end messages (default 50)",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of every system, interleaved (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 run, 2,000 messages, 3 s idle, 5 s of web load")
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                        help=f"comma-separated, from {', '.join(SYSTEMS)} (default: all)")
    parser.add_argument("--redis", help="run every system on this Redis database (flushed) instead of "
                                        "private redis-server instances; idle commands/s then count "
                                        "every client of that server")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL URL allowed to create the end-to-end database")
    parser.add_argument("--no-web", action="store_true", help="skip the web path and end to end")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results folder")
    parser.add_argument("--update-readme", action="store_true",
                        help="write the table into bench/README.md's 'Last results'")
    for knob, help_text in _KNOBS.items():
        kind = float if knob == "idle_seconds" else int
        parser.add_argument("--" + knob.replace("_", "-"), type=kind, help=help_text)
    args = parser.parse_args(argv)
    args.system_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.system_list if s not in SYSTEMS]
    if unknown or not args.system_list:
        parser.error(f"unknown system(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SYSTEMS)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    given = argv if argv is not None else sys.argv[1:]
    if args.quick and not any(a == "--runs" or a.startswith("--runs=") for a in given):
        args.runs = 1
    scale = Scale.quick() if args.quick else Scale()
    overrides = {k: getattr(args, k) for k in _KNOBS if getattr(args, k) is not None}
    for key, value in overrides.items():
        if value <= 0:
            parser.error(f"--{key.replace('_', '-')} must be positive")
    args.scale = dataclasses.replace(scale, **overrides)
    args.web = not args.no_web and "ours" in args.system_list
    if args.web and shutil.which("wrk") is None:
        parser.error(WRK_HELP)
    return args


def run_system(system: str, run: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """One run of one system in a process of its own, on a Redis of its own."""
    server = None
    if args.redis:
        url = args.redis
        try:
            redis.Redis.from_url(url).flushdb()
        except redis.RedisError as e:
            raise BenchError(f"the Redis database {url} cannot be used: {e}") from None
    else:
        server = RedisServer()
        url = server.url
    command = [PY, "-m", "bench.run_one", "--system", system, "--redis", url, "--scale", scale_json(args.scale),
               "--log-dir", str(log_dir), "--seed", str(run), "--pg-admin", args.pg_admin]
    if args.web:
        command.append("--web")
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              env=SYSTEMS[system].env(url), timeout=3600)
    finally:
        if server is not None:
            server.stop()
        else:
            with contextlib.suppress(redis.RedisError):
                redis.Redis.from_url(url).flushdb()
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(done.stderr.strip()[-3000:] or f"bench.run_one exited with {done.returncode}")
    result = json.loads(line.removeprefix("BENCH_RESULT "))
    result["run"] = run
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = args.out / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    runs: list[list[dict[str, Any]]] = []
    errors: list[str] = []
    started = time.monotonic()
    for run in range(1, args.runs + 1):
        results = []
        for system in args.system_list:
            t0 = time.monotonic()
            print(f"run {run}/{args.runs}: {system} ...", file=sys.stderr, flush=True)
            try:
                results.append(run_system(system, run, args, log_dir))
            except BenchError as e:
                errors.append(f"run {run}, {system}: {e}")
                print(f"  failed: {e}", file=sys.stderr, flush=True)
            else:
                print(f"  done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        runs.append(results)

    scale = dataclasses.asdict(args.scale)
    summary = report.summarize(runs, args.system_list)
    redis_version = _redis_version(args)
    meta = {"timestamp": stamp, "runs": args.runs, "systems": args.system_list, "scale": scale,
            "quick": args.quick, "python": platform.python_version(), "redis": redis_version,
            "machine": f"{platform.machine()}, {_cpus()} CPUs", "versions": _versions(),
            "seconds": round(time.monotonic() - started), "errors": errors}
    (args.out / f"{stamp}.json").write_text(json.dumps({"meta": meta, "runs": runs, "summary": summary},
                                                       indent=1))
    report.plot(runs, args.system_list, args.out / "latency.png")
    section = _section(meta, report.table(summary, args.system_list, scale), args)
    (args.out / f"{stamp}.md").write_text(section + "\n")
    if args.update_readme:
        report.update_readme(section)
    print(section)
    print(f"\nwrote {args.out / (stamp + '.md')}, {args.out / (stamp + '.json')}, {args.out / 'latency.png'}",
          file=sys.stderr)
    if errors:
        print("\nbroken measurements:\n" + "\n".join(errors), file=sys.stderr)
        return 1
    return 0


def _section(meta: dict[str, Any], table: str, args: argparse.Namespace) -> str:
    command = "python -m bench.compare" + (" --quick" if meta["quick"] else f" --runs {meta['runs']}")
    v = meta["versions"]
    lines = [
        f"{meta['timestamp']}: `{command}`, {meta['machine']}, Python {meta['python']}, Redis {meta['redis']}, "
        f"dramatiq {v.get('dramatiq')}, celery {v.get('celery')}; {meta['runs']} run(s) per system, "
        f"interleaved; median (min-max); ratios are this project / the peer, run i against run i "
        f"(above 1 is better where higher is better, below 1 where lower is). {meta['seconds']} s in all.",
        "",
        table,
        "",
        "![send-to-start latencies](results/latency.png)" if args.out == ROOT / "bench" / "results"
        else f"Latency plot: `{args.out / 'latency.png'}`",
    ]
    if meta["errors"]:
        lines += ["", "Broken measurements:", *[f"- {e.splitlines()[0]}" for e in meta["errors"]]]
    return "\n".join(lines)


def _redis_version(args: argparse.Namespace) -> str:
    if args.redis:
        try:
            return str(redis.Redis.from_url(args.redis).info("server")["redis_version"])
        except redis.RedisError:
            return "unreachable"

    out = subprocess.run([shutil.which("redis-server") or "redis-server", "--version"], capture_output=True,
                         text=True).stdout
    return next((w.split("=")[1] for w in out.split() if w.startswith("v=")), "?")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("dramatiq", "celery", "kombu", "redis", "gunicorn", "falcon"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
