<#
.SYNOPSIS
    Installs (or removes) the WhatsApp assistant worker as a Windows service with NSSM.

.DESCRIPTION
    Runs the runbook's Windows line as a service:
        celery -A tasks worker -l info -P solo -Q default,state
    from the project's virtualenv, with
      - stdout and stderr appended to log files that NSSM rotates (by size and daily),
      - a restart whenever the process exits: a -P solo node exits with code 75 when a
        task is stuck in C code past its hard time limit, to be replaced (README, "The worker"),
      - a stop that sends Ctrl+C (a warm shutdown: the running task finishes) and waits
        longer than the warm shutdown (hard limit 300 s + 3 s grace + 5 s) before NSSM
        terminates the process,
      - the settings of an environment file (KEY=VALUE lines, as deploy/whatsapp-assistant.env.example).

    Run it in an elevated PowerShell.  NSSM: https://nssm.cc (nssm.exe on PATH, or -Nssm).

.EXAMPLE
    .\install-worker.ps1 -InstallDir C:\srv\assistant -EnvFile C:\srv\assistant\whatsapp-assistant.env
.EXAMPLE
    .\install-worker.ps1 -Uninstall
#>
[CmdletBinding()]
param(
    # The project checkout, with its virtualenv in .venv (python -m venv .venv; .venv\Scripts\pip install .).
    [string]$InstallDir = "C:\srv\assistant",
    [string]$ServiceName = "whatsapp-worker",
    # KEY=VALUE lines (REDIS_URI, DB_URL, GOOGLE_API_KEY, WHATSAPP_*); '#' starts a comment.
    [string]$EnvFile = "",
    [string]$LogDir = "",
    [string]$Nssm = "nssm.exe",
    [string]$Queues = "default,state",
    [string]$LogLevel = "info",
    # The node's name; empty: Celery's default, celery@<hostname>.
    [string]$NodeName = "",
    # The tasks' hard time limit in seconds (the worker's --time-limit; the actors' own is 300).
    [int]$TimeLimitSeconds = 300,
    # Rotate a log file when it grows past this many bytes (and once a day).
    [int]$RotateBytes = 10485760,
    # Run as this account (e.g. .\assistant or NT SERVICE\whatsapp-worker); empty: LocalSystem.
    [string]$Account = "",
    [string]$AccountPassword = "",
    # Remove the service instead (stopping it first: a warm shutdown).
    [switch]$Uninstall
)

Set-StrictMode -Version Latest
$ErrorActionPreference = "Stop"

# The warm shutdown the worker needs: running tasks get the hard limit + 3 s grace + 5 s
# (actors/worker_spec.py shutdown_timeout_s); NSSM waits 20 s more before it kills.
$WarmShutdownSeconds = $TimeLimitSeconds + 3 + 5
$StopTimeoutMs = ($WarmShutdownSeconds + 20) * 1000

function Invoke-Nssm {
    & $Nssm @args
    if ($LASTEXITCODE -ne 0) {
        throw "nssm $($args -join ' ') failed with exit code $LASTEXITCODE"
    }
}

if (-not (Get-Command $Nssm -ErrorAction SilentlyContinue)) {
    throw "NSSM not found ($Nssm): install it from https://nssm.cc or pass -Nssm C:\path\to\nssm.exe"
}

if ($Uninstall) {
    if (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) {
        & $Nssm stop $ServiceName | Out-Null   # already stopped: not an error
        Invoke-Nssm remove $ServiceName confirm
        Write-Host "Removed the service $ServiceName (its log files stay)."
    } else {
        Write-Host "No service named $ServiceName."
    }
    exit 0
}

$Celery = Join-Path $InstallDir ".venv\Scripts\celery.exe"
if (-not (Test-Path $Celery)) {
    throw "$Celery not found: create the virtualenv in $InstallDir first (python -m venv .venv; .venv\Scripts\pip install .)"
}
if ($Queues -notmatch '^(default|celery|state)(,(default|celery|state))*$') {
    throw "-Queues takes default and/or state (comma-separated), got '$Queues'"
}
if ($TimeLimitSeconds -lt 1) {
    throw "-TimeLimitSeconds must be at least 1, got $TimeLimitSeconds"
}
if (-not $LogDir) { $LogDir = Join-Path $InstallDir "logs" }
New-Item -ItemType Directory -Force -Path $LogDir | Out-Null

if (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue) {
    throw "A service named $ServiceName exists: remove it first (-Uninstall) or pick another -ServiceName"
}

$Arguments = @("-A", "tasks", "worker", "-l", $LogLevel, "-P", "solo", "-Q", $Queues, "--time-limit=$TimeLimitSeconds")
if ($NodeName) { $Arguments += @("-n", $NodeName) }

Invoke-Nssm install $ServiceName $Celery @Arguments
Invoke-Nssm set $ServiceName AppDirectory $InstallDir
Invoke-Nssm set $ServiceName DisplayName "WhatsApp assistant worker"
Invoke-Nssm set $ServiceName Description "celery -A tasks worker -P solo (Dramatiq actors of the WhatsApp assistant)"
Invoke-Nssm set $ServiceName Start SERVICE_AUTO_START

# Logs: stdout (banner, warm-shutdown line) and stderr (the log lines), appended and rotated.
Invoke-Nssm set $ServiceName AppStdout (Join-Path $LogDir "$ServiceName.out.log")
Invoke-Nssm set $ServiceName AppStderr (Join-Path $LogDir "$ServiceName.err.log")
Invoke-Nssm set $ServiceName AppStdoutCreationDisposition 4
Invoke-Nssm set $ServiceName AppStderrCreationDisposition 4
Invoke-Nssm set $ServiceName AppRotateFiles 1
Invoke-Nssm set $ServiceName AppRotateOnline 1
Invoke-Nssm set $ServiceName AppRotateSeconds 86400
Invoke-Nssm set $ServiceName AppRotateBytes $RotateBytes

# Restart on every exit (exit code 75 is the node asking to be replaced), after 5 s;
# NSSM throttles a process that dies within 10 s of its start.
Invoke-Nssm set $ServiceName AppExit Default Restart
Invoke-Nssm set $ServiceName AppRestartDelay 5000
Invoke-Nssm set $ServiceName AppThrottle 10000

# Stop: Ctrl+C (warm shutdown), waited for longer than the warm shutdown; the
# window and thread messages do not apply to a console program.
Invoke-Nssm set $ServiceName AppStopMethodSkip 6
Invoke-Nssm set $ServiceName AppStopMethodConsole $StopTimeoutMs
Invoke-Nssm set $ServiceName AppKillProcessTree 1

# The environment: KEY=VALUE lines of -EnvFile (secrets stay in NSSM's registry key,
# readable by administrators only).
$Environment = @("PYTHONUNBUFFERED=1")
if ($EnvFile) {
    if (-not (Test-Path $EnvFile)) { throw "-EnvFile $EnvFile not found" }
    foreach ($line in Get-Content $EnvFile) {
        $line = $line.Trim()
        if ($line -eq "" -or $line.StartsWith("#")) { continue }
        if ($line -notmatch '^[A-Za-z_][A-Za-z0-9_]*=') { throw "$EnvFile`: not a KEY=VALUE line: $line" }
        $Environment += $line
    }
}
Invoke-Nssm set $ServiceName AppEnvironmentExtra @Environment

if ($Account) {
    Invoke-Nssm set $ServiceName ObjectName $Account $AccountPassword
}

Invoke-Nssm start $ServiceName
Write-Host "Installed and started $ServiceName; logs in $LogDir."
Write-Host "Stop: nssm stop $ServiceName (waits up to $($StopTimeoutMs / 1000) s for the running task)."
