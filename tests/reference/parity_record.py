"""Parity figures, recorded by the tests themselves so docs/parity.md shows exactly what CI asserts.

A parity test calls `record_parity(...)` with what it measured. Two modes:

- generating (LDM_PARITY_RECORD names a file): the record is appended to it as one JSON line;
  `python docs/generate.py` runs the parity tests that way and renders docs/parity.md
  (tests/parity_report.py);
- every other run (CI): the record is checked against docs/parity.md. The page must have a row for
  this test and this output with the same module, preset, size, reference and tolerance, or the
  test fails: a parity test that was added or changed without regenerating the page makes the page
  stale, and CI says so. (The measured error itself is not compared: it differs in the last digits
  between machines; the page shows the generating machine's figure, which was within tolerance.)
  Rows for tests that no longer exist are caught by tests/docs/test_generated_docs.py.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "parity.md"
REGENERATE = "python docs/generate.py"
COLUMNS = ("module", "preset", "size", "output", "reference", "error", "tolerance", "test")


def current_test() -> str:
    """The running test's node id, e.g. tests/ldm/test_unet.py::test_unet_matches_original[v1]."""
    running = os.environ.get("PYTEST_CURRENT_TEST", "")
    return running.rsplit(" (", 1)[0]  # pytest appends " (setup)", " (call)" or " (teardown)"


def format_tolerance(tolerance: float) -> str:
    return f"{tolerance:.0e}"


@lru_cache(maxsize=None)
def read_page(path: Path = PAGE) -> tuple[tuple[str, ...], tuple[dict, ...]]:
    """docs/parity.md -> (the test paths it was generated from, its table rows as dicts of strings)."""
    text = path.read_text()
    paths = re.search(r"\(test paths: ([^)]*)\)", text)
    if paths is None:
        raise AssertionError(f"{path}: no '(test paths: ...)' in its header; regenerate it with {REGENERATE}")
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(COLUMNS) or not line.startswith("| ") or cells[0] in ("module", "---"):
            continue
        rows.append(dict(zip(COLUMNS, [c.strip("`") for c in cells])))
    return tuple(p.strip() for p in paths.group(1).split(",")), tuple(rows)


def check_page(record: dict, path: Path = PAGE) -> None:
    """Fail when `path` (docs/parity.md) does not describe this measurement (see the module doc)."""
    test = record["test"]
    paths, rows = read_page(path)
    if not any(test == p or test.startswith(p.rstrip("/") + "/") or test.startswith(p + "::") for p in paths):
        return  # a parity test the page was not generated from (e.g. tests/checkpoints_convert)
    expected = {k: str(record[k]) for k in ("module", "preset", "size", "output", "reference", "test")}
    expected["tolerance"] = format_tolerance(record["tolerance"])
    for row in rows:
        if all(row[k] == v for k, v in expected.items()):
            return
    raise AssertionError(
        f"{path.name} is stale: it has no row {expected}; regenerate it with {REGENERATE} "
        "(it runs the parity tests and rewrites the page)")


def record_parity(module: str, preset: str, size: str, output: str, reference: str, error: float,
                  tolerance: float) -> None:
    record = {"module": module, "preset": preset, "size": size, "output": output, "reference": reference,
              "error": error, "tolerance": tolerance, "test": current_test()}
    path = os.environ.get("LDM_PARITY_RECORD")
    if not path:
        check_page(record)
        return
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
