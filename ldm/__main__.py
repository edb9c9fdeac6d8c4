"""`python -m ldm ...`: the command line (see ldm/cli/).

Before anything is imported, a start-up check: the project's other top-level packages
(`tokenizer`, `samplers`, `checkpoints_convert`; the design card fixes these names) must resolve to
this project's folders. `tokenizer` is also the name of an unrelated PyPI package: when another
package wins the import, say which, instead of failing later with a confusing error.
"""

import importlib.util
import sys
from pathlib import Path

SIBLINGS = ("tokenizer", "samplers", "checkpoints_convert")


def foreign_packages() -> list[str]:
    """One line per sibling package that is missing or resolves outside this project."""
    root = Path(__file__).resolve().parents[1]
    problems = []
    for name in SIBLINGS:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
        if origin is None or origin.parent != root / name:
            problems.append(f"'{name}' resolves to {origin or 'nothing'}, not {root / name}")
    return problems


if __name__ == "__main__":
    problems = foreign_packages()
    if problems:
        print("python -m ldm: error: " + "; ".join(problems) + ". Another installed package (or a folder in "
              "the current directory) has the same name: install this project into a virtual environment of "
              "its own (README) or run from another directory.", file=sys.stderr)
        sys.exit(2)

    from .cli import main

    sys.exit(main())
