"""Run one reference runner (run_*.py) on a job, in a subprocess apart from our packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_job(runner: Path, job: dict, folder: Path, what: str, extra_env: dict[str, str] | None = None) -> None:
    """Write `job` to folder/job.json and run `python runner folder/job.json` in `folder`, with no
    PYTHONPATH (the runner puts the pinned wheels it needs first on sys.path itself). A failure
    raises RuntimeError naming `what`, with the end of the runner's stderr."""
    (folder / "job.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | (extra_env or {})
    result = subprocess.run([sys.executable, str(runner), str(folder / "job.json")], cwd=folder, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{result.stderr[-4000:]}")
