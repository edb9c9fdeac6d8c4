"""`python -m ldm ...` for the tests, without paying Python's start and torch's import each time.

A command-line test runs `python -m ldm` in a process of its own and reads its exit code, stdout
and stderr. Starting Python and importing torch and the command line takes about 3 s here, and
the tests run some 200 commands, most of which refuse a flag in a few milliseconds after that. So
one server process (tests/ldm_command_server.py) imports them once and forks a fresh child for
each command: the child takes the command's working directory and environment, points its stdout
and stderr at files, runs what `python -m ldm` runs (the start-up check of ldm/__main__.py, then
ldm.cli.main) and exits with its code. The child is a real process of its own (its exit code, its
signals, its threads, its memory); only the start and the imports are shared. The server runs no
torch computation, so no thread pool exists when it forks.

What a fork cannot give falls back to the real `python -m ldm`: an environment that changes
OMP_NUM_THREADS (read by the OpenMP runtime when torch is imported, i.e. in the server), and a
`preexec_fn`. Tests of the start itself call subprocess directly.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = Path(__file__).with_name("ldm_command_server.py")
_server: subprocess.Popen | None = None


def environment(env: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}


def server() -> subprocess.Popen:
    global _server
    if _server is None or _server.poll() is not None:
        _server = subprocess.Popen([sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   env=environment(None), text=True)
        atexit.register(_server.kill)
        ready = _server.stdout.readline()
        assert ready.strip() == "ready", f"the command server did not start: {ready!r}"
    return _server


def run_ldm(*args: str, cwd: str | Path, env: dict[str, str] | None = None, timeout: float = 600, text: bool = True,
            patch: str = "", preexec_fn=None) -> subprocess.CompletedProcess:
    """As subprocess.run([sys.executable, "-m", "ldm", *args], cwd=cwd, env=os.environ | PYTHONPATH |
    env, capture_output=True, text=text, timeout=timeout). patch: Python code the process runs
    first (to fake a full disk, say)."""
    full = environment(env)
    if preexec_fn is not None or full.get("OMP_NUM_THREADS") != os.environ.get("OMP_NUM_THREADS"):
        command = [sys.executable, "-c", f"import sys\n{patch}\nimport runpy\nsys.argv[0] = 'ldm'\n"
                   "runpy.run_module('ldm', run_name='__main__', alter_sys=True)", *args]
        return subprocess.run(command, cwd=cwd, env=full, capture_output=True, text=text, timeout=timeout,
                              preexec_fn=preexec_fn)
    with tempfile.TemporaryDirectory(prefix="ldm-command-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        request = {"args": list(args), "cwd": str(cwd), "env": full, "stdout": str(out), "stderr": str(err),
                   "patch": patch}
        process = server()
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            process.kill()
            raise subprocess.TimeoutExpired(["python", "-m", "ldm", *args], timeout)
        code = int(process.stdout.readline())
        read = (lambda p: p.read_text(errors="replace")) if text else (lambda p: p.read_bytes())
        return subprocess.CompletedProcess(["python", "-m", "ldm", *args], code, read(out), read(err))
