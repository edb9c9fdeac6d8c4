"""The server of tests/ldm_command.py: imports torch and the command line once, then for each
request (a JSON line on stdin) forks a child that runs `python -m ldm` and answers its exit code."""

import json
import os
import sys
import traceback
from pathlib import Path

# `python tests/ldm_command_server.py` puts tests/ first on the path, where tests/tokenizer/ and
# tests/samplers/ would shadow the project's packages: the project's root instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: F401 - imported once, here, for every child

import ldm.__main__ as start  # the start-up check (its `if __name__ == "__main__"` part is not run)
import ldm.cli


def child(request: dict) -> int:
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    sys.argv = ["ldm", *request["args"]]
    try:
        exec(request["patch"], {"__name__": "__patch__"})
        problems = start.foreign_packages()
        if problems:
            print("python -m ldm: error: " + "; ".join(problems), file=sys.stderr)
            return 2
        return ldm.cli.main(request["args"])
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except BaseException:  # noqa: BLE001 - what Python prints for an uncaught exception, and its code
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main() -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os._exit(child(request))
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)  # -N for a signal, as subprocess says


if __name__ == "__main__":
    main()
