"""Child processes that cannot outlive metajudge: servers and launched training jobs.

Every child is started under a small guard process (``python -m metajudge.processes``). The guard
starts the command, adopts every process the command leaves behind (it is a Linux child
subreaper), and stops the whole tree, SIGTERM first and SIGKILL after a grace period, when
either metajudge asks it to (:meth:`Child.stop`, also on Ctrl-C and errors) or metajudge itself
dies, even by ``kill -9``: the guard checks twice a second that its parent is alive, and the
kernel kills the guard if its parent goes (``PR_SET_PDEATHSIG``). Process exit is what frees a
GPU's memory, so this is also how one iteration's engines make room for training.

    child = Child.start(["vllm", "serve", model], log=Path("runs/x/iter_01/servers/r0.log"))
    ...
    child.stop()
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
#: seconds between SIGTERM and SIGKILL when a tree is stopped
GRACE_S = 15.0


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
        except (OSError, AttributeError):  # not fatal: the parent-alive poll still works
            pass


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux)."""
    _prctl(_PR_SET_PDEATHSIG, sig)


def _guard_dies_with_parent() -> None:
    # SIGTERM, not SIGKILL: the guard must live long enough to stop the tree it watches
    die_with_parent(signal.SIGTERM)


class Child:
    """A guarded child process and everything it starts."""

    def __init__(self, proc: subprocess.Popen, command: Sequence[str], log_path: Path | None):
        self.proc, self.command, self.log_path = proc, list(command), log_path

    @classmethod
    def start(cls, command: Sequence[str], *, log: Path | None = None,
              env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
              grace_s: float = GRACE_S) -> Child:
        """Start ``command`` under a guard; its output goes to ``log`` (or is inherited)."""
        guard = [sys.executable, "-m", "metajudge.processes", str(os.getpid()), str(grace_s),
                 "--", *command]
        out = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = log.open("ab")
        try:
            proc = subprocess.Popen(guard, stdout=out, stderr=subprocess.STDOUT if out else None,
                                    stdin=subprocess.DEVNULL, env=dict(env) if env else None,
                                    cwd=cwd, start_new_session=True,
                                    preexec_fn=_guard_dies_with_parent)
        finally:
            if out is not None:
                out.close()
        return cls(proc, command, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = GRACE_S + 15) -> int | None:
        """Stop the command and every process it started; returns the guard's exit code: the
        command's own, or 128 + the signal that ended it (143 after SIGTERM)."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        return self.proc.returncode

    def tail(self, lines: int = 20) -> str:
        """The end of the child's log, for error messages."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc; children first found, deepest last)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stop_tree(grace_s: float, reaped: dict[int, int]) -> None:
    me = os.getpid()
    _signal_all(_descendants(me), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _descendants(me):
        _reap(reaped)
        time.sleep(0.1)
    _signal_all(_descendants(me), signal.SIGKILL)
    _reap(reaped)


def _reap(reaped: dict[int, int]) -> None:
    """Collect every exited child (adopted orphans too), keeping each one's wait status."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        reaped[pid] = status


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal's number.

    >>> exit_code(7 << 8), exit_code(signal.SIGTERM)
    (7, 143)
    """
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def guard(parent: int, grace_s: float, command: Sequence[str]) -> int:
    """Run ``command``; stop its tree when asked (SIGTERM/SIGINT) or when ``parent`` dies."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    proc = subprocess.Popen(list(command))
    reaped: dict[int, int] = {}
    code: int | None = None
    while code is None:
        if stopping or os.getppid() != parent:
            # the tree's reaping collects the command too (Popen.poll would then read ECHILD
            # as 0): its status is taken from what was reaped
            _stop_tree(grace_s, reaped)
            if proc.pid in reaped:
                return exit_code(reaped[proc.pid])
            code = proc.poll()
            return 143 if code is None else (128 - code if code < 0 else code)
        code = proc.poll()
        if code is None:
            time.sleep(0.5)
    _stop_tree(grace_s, reaped)  # whatever the command left behind goes with it
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    _parent, _grace, _sep, *_command = sys.argv[1:]
    if _sep != "--" or not _command:
        sys.exit("usage: python -m metajudge.processes PARENT_PID GRACE_S -- COMMAND ...")
    sys.exit(guard(int(_parent), float(_grace), _command))
