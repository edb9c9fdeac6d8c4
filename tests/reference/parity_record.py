"""Parity figures, recorded by the tests themselves so the report shows exactly what CI asserts.

A parity test calls `record_parity(...)` with what it measured. When the environment variable
LDM_PARITY_RECORD names a file, each record is appended to it as one JSON line; the script
`tests/parity_report.py` runs the parity tests that way and renders docs/parity.md.
"""

from __future__ import annotations

import json
import os


def record_parity(module: str, preset: str, size: str, output: str, reference: str, error: float,
                  tolerance: float) -> None:
    path = os.environ.get("LDM_PARITY_RECORD")
    if not path:
        return
    record = {"module": module, "preset": preset, "size": size, "output": output, "reference": reference,
              "error": error, "tolerance": tolerance}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
