"""deploy/windows/install-worker.ps1, checked without PowerShell: its worker line runs
under the real CLI, and its NSSM settings are NSSM's and fit the worker."""

from __future__ import annotations

import re
import signal

import pytest

from tests.deploy.files import INSTALL_WORKER_PS1, readme
from tests.support.celery_worker import CeleryWorker

SCRIPT = INSTALL_WORKER_PS1.read_text()

#: NSSM 2.24's service parameters (nssm.cc/usage, "Managing services from the command line").
NSSM_PARAMETERS = {
    "Application", "AppDirectory", "AppParameters", "AppAffinity", "AppEnvironment", "AppEnvironmentExtra",
    "AppExit", "AppNoConsole", "AppPriority", "AppRedirectHook", "AppRestartDelay", "AppRotateBytes",
    "AppRotateBytesHigh", "AppRotateDelay", "AppRotateFiles", "AppRotateOnline", "AppRotateSeconds",
    "AppStderr", "AppStderrCreationDisposition", "AppStderrFlagsAndAttributes", "AppStderrShareMode",
    "AppStdin", "AppStdinCreationDisposition", "AppStdinFlagsAndAttributes", "AppStdinShareMode",
    "AppStdout", "AppStdoutCreationDisposition", "AppStdoutFlagsAndAttributes", "AppStdoutShareMode",
    "AppStopMethodConsole", "AppStopMethodSkip", "AppStopMethodThreads", "AppStopMethodWindow",
    "AppThrottle", "AppKillConsoleDelay", "AppKillWindowDelay", "AppKillThreadsDelay", "AppKillProcessTree",
    "DependOnGroup", "DependOnService", "Description", "DisplayName", "ImagePath", "ObjectName", "Name",
    "Start", "Type",
}


def _defaults() -> dict[str, str]:
    """The param() block's defaults, by parameter name."""
    return {name: value.strip('"') for name, value in
            re.findall(r"^\s*\[(?:string|int)\]\$(\w+) = (\"[^\"]*\"|\d+),?\s*$", SCRIPT, re.MULTILINE)}


def _expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: str(values[m.group(1)]), text)


def _arithmetic(name: str, values: dict[str, str]) -> int:
    """A ``$Name = <arithmetic over variables>`` line, evaluated."""
    expression = _expand(re.search(rf"^\${name} = (.+)$", SCRIPT, re.MULTILINE).group(1), values)
    assert re.fullmatch(r"[\d\s+*()]+", expression), expression
    return int(eval(expression))  # digits, + * and parentheses only (checked above)


def _worker_argv(**overrides: str) -> list[str]:
    values = _defaults() | overrides
    body = re.search(r"^\$Arguments = @\((.*)\)$", SCRIPT, re.MULTILINE).group(1)
    items = [item.strip() for item in body.split(",")]
    assert all(re.fullmatch(r'"[^"]*"|\$\w+', item) for item in items), items
    return [_expand(item.strip('"'), values) for item in items]


def _nssm_settings() -> dict[str, str]:
    return dict(re.findall(r"^Invoke-Nssm set \$ServiceName (\w+) ?(.*)$", SCRIPT, re.MULTILINE))


def test_the_service_runs_the_runbooks_windows_line():
    argv = _worker_argv()
    assert " ".join(argv[:9]) == "-A tasks worker -l info -P solo -Q default,state"
    assert "`celery -A tasks worker -l info -P solo -Q default,state --time-limit=300`" in readme()
    # The script starts the virtualenv's celery with exactly these arguments
    assert re.search(r'^\$Celery = Join-Path \$InstallDir "\.venv\\Scripts\\celery\.exe"$', SCRIPT, re.MULTILINE)
    assert "Invoke-Nssm install $ServiceName $Celery @Arguments" in SCRIPT


@pytest.mark.parametrize("overrides", [{}, {"NodeName": "w1@%h", "Queues": "state", "TimeLimitSeconds": "600"}])
def test_the_facades_parser_accepts_the_worker_line(overrides):
    from facade.cli import _parser

    argv = _worker_argv(**overrides)
    if overrides.get("NodeName"):
        argv += ["-n", overrides["NodeName"]]
    args = _parser().parse_args(argv)
    assert (args.command, args.pool, args.loglevel) == ("worker", "solo", "info")
    assert args.queues == overrides.get("Queues", "default,state")
    assert args.time_limit == float(overrides.get("TimeLimitSeconds", 300))


@pytest.mark.parametrize("time_limit_s", [300, 600, 30])
def test_nssm_waits_longer_than_the_warm_shutdown_before_it_kills(time_limit_s):
    from actors.worker_spec import shutdown_timeout_s

    values = _defaults() | {"TimeLimitSeconds": str(time_limit_s)}
    warm_s = _arithmetic("WarmShutdownSeconds", values)
    assert warm_s == shutdown_timeout_s(time_limit_s)
    stop_ms = _arithmetic("StopTimeoutMs", values | {"WarmShutdownSeconds": str(warm_s)})
    assert stop_ms / 1000 > shutdown_timeout_s(time_limit_s)
    settings = _nssm_settings()
    # Ctrl+C is the only stop message a console program gets (skip WM_CLOSE 2 + WM_QUIT 4), waited for that long
    assert settings["AppStopMethodConsole"] == "$StopTimeoutMs"
    assert settings["AppStopMethodSkip"] == "6"


def test_nssm_restarts_the_worker_whenever_it_exits_and_rotates_its_logs():
    settings = _nssm_settings()
    assert set(settings) <= NSSM_PARAMETERS, set(settings) - NSSM_PARAMETERS
    assert settings["AppExit"] == "Default Restart"  # exit 75 is a node asking to be replaced
    assert int(settings["AppRestartDelay"]) > 0
    for stream in ("AppStdout", "AppStderr"):
        assert settings[stream].startswith("(Join-Path $LogDir"), stream
    # Appended (OPEN_ALWAYS), rotated while running, daily and by size
    assert settings["AppStdoutCreationDisposition"] == settings["AppStderrCreationDisposition"] == "4"
    assert (settings["AppRotateFiles"], settings["AppRotateOnline"]) == ("1", "1")
    assert settings["AppRotateSeconds"] == "86400" and settings["AppRotateBytes"] == "$RotateBytes"
    assert settings["AppDirectory"] == "$InstallDir"
    assert settings["Start"] == "SERVICE_AUTO_START"


def test_the_uninstall_switch_stops_and_removes_the_service():
    assert re.search(r"^\s*\[switch\]\$Uninstall\s*$", SCRIPT, re.MULTILINE)
    block = SCRIPT[SCRIPT.index("if ($Uninstall) {"):SCRIPT.index("exit 0")]
    assert "& $Nssm stop $ServiceName" in block and "Invoke-Nssm remove $ServiceName confirm" in block


def test_the_script_is_balanced_outside_strings_and_comments():
    # No PowerShell here: at least every bracket closes and every string ends on its line.
    text = re.sub(r"<#.*?#>", "", SCRIPT, flags=re.DOTALL)
    stack = []
    pairs = {")": "(", "}": "{", "]": "["}
    for number, line in enumerate(text.splitlines(), 1):
        quote = None
        i = 0
        while i < len(line):
            ch = line[i]
            if quote:
                if ch == "`":
                    i += 1
                elif ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch in "({[":
                stack.append((ch, number))
            elif ch in ")}]":
                assert stack and stack.pop()[0] == pairs[ch], f"line {number}: unbalanced {ch}"
            i += 1
        assert quote is None, f"line {number}: unterminated string"
    assert not stack, f"unclosed {stack}"


@pytest.mark.slow
def test_the_worker_line_runs_a_node_that_ctrl_c_stops_warmly(tmp_path, global_broker, redis_client):
    # Given the script's exact worker line, as NSSM starts it
    argv = _worker_argv()
    assert argv[:2] == ["-A", "tasks"]
    worker = CeleryWorker(argv[2:], tmp_path / "worker.log")  # it puts -A tasks first itself
    try:
        worker.wait_ready()
        # When NSSM stops the service: Ctrl+C (SIGINT here)
        worker.signal(signal.SIGINT)
        # Then the node shuts down warmly and exits 0 (NSSM restarts it only on its own exit)
        assert worker.wait() == 0, worker.output()
        assert "Warm shutdown" in worker.output()
    finally:
        worker.kill_all()
