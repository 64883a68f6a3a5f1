"""Starting and stopping local processes: spawn with a log file, wait for a port, stop by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tracekit.errors import StackError


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def ensure_port_free(name: str, host: str, port: int) -> None:
    """Fail with one clear line when ``port`` is taken by something we did not start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port left in TIME_WAIT by a server we just stopped is free (servers set it
        # too); on Linux the bind still fails while anything listens there.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StackError(
                f"{name}: port {host}:{port} is already in use; stop what holds it or choose another "
                f"port (see `trace up --help`)"
            ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (so ``down`` can kill its group), output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user is not None else None,
        )
    except OSError as exc:
        raise StackError(f"cannot start {argv[0]}: {exc}") from exc
    finally:
        log.close()


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll ``check`` until true; fail naming ``what`` (and the log's last line) on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}{log_suffix(log_path)}")
        time.sleep(0.05)
    raise StackError(f"{what} not ready after {timeout:.0f}s{log_suffix(log_path)}")


def log_suffix(log_path: Path | None) -> str:
    if log_path is None or not log_path.exists():
        return ""
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    return f": {lines[-1].strip()} (log: {log_path})" if lines else f" (log: {log_path})"


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    return stat is None or stat[0] != "Z"


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat``), to detect pid reuse."""
    stat = _proc_stat(pid)
    return int(stat[19]) if stat is not None else None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (state first), or None if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def stop_pid(pid: int, *, timeout: float = 10.0, group: bool = True) -> None:
    """SIGTERM the process (group), then SIGKILL after ``timeout``.

    The group is signalled only when ``pid`` leads it (as :func:`spawn` arranges), else the process.
    """
    if group:
        with contextlib.suppress(OSError):
            group = os.getpgid(pid) == pid

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return
    send(signal.SIGKILL)
    _wait_gone(pid, 2.0)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        if not pid_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
