"""Imports point one way (docs/architecture.md, DESIGN.md), read from the source with ast: nothing
is imported or run.

    tokenizer/, samplers/         import nothing of the project
    ldm/config.py, ldm/modules/   import only each other
    checkpoints_convert/          of ldm, only ldm.config and ldm.modules (never the pipeline,
                                  the tasks or a command); tokenizer and samplers freely
    ldm/cli/                      the top: nothing else imports it (but `python -m ldm`, ldm/__main__.py)
    and no file imports another in a circle.

Imports under `if TYPE_CHECKING:` are annotations, not dependencies, and are left out. An import
inside a function counts (it is a dependency all the same), and so does an import of a package
above the module (`from .. import __version__` runs that package's __init__).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ldm", "tokenizer", "samplers", "checkpoints_convert")

# (importer prefix, what it must not import, why): prefixes match a module and its submodules.
RULES = [
    ("tokenizer", lambda m: not m.startswith("tokenizer"), "tokenizer/ imports nothing of the project"),
    ("samplers", lambda m: not m.startswith("samplers"), "samplers/ imports nothing of the project"),
    ("ldm.config", lambda m: True, "ldm/config.py imports nothing of the project"),
    ("ldm.modules", lambda m: not m.startswith(("ldm.modules", "ldm.config")),
     "ldm/modules/ imports only ldm.config and each other"),
    ("checkpoints_convert", lambda m: m.startswith("ldm") and not m.startswith(("ldm.config", "ldm.modules")),
     "checkpoints_convert/ imports of ldm only ldm.config and ldm.modules"),
    ("", lambda m: m.startswith("ldm.cli"), "only the command line imports the command line"),
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for n in ast.walk(node) if hasattr(n, "lineno")}
    return lines


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in the file, TYPE_CHECKING blocks aside)."""
    paths = {module_name(p, root): p for package in packages for p in (root / package).rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = type_checking_lines(tree)
        targets = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                targets |= {resolve(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                # `from pkg import sub` imports the module pkg.sub; `from pkg import name`, pkg itself
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in paths else resolve(base) for a in node.names}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        for prefix, forbidden, why in RULES:
            if module == prefix or module.startswith(prefix + ".") or prefix == "":
                if prefix == "" and module.startswith(("ldm.cli", "ldm.__main__")):
                    continue
                found += [f"{module} imports {t}: {why}" for t in sorted(targets) if forbidden(t)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (each reported once, from where it was entered)."""
    state, stack, found = {}, [], []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_imports_point_one_way():
    graph = import_graph(ROOT)
    assert len(graph) > 40 and graph["ldm.pipeline"] >= {"ldm.tasks.txt2img", "checkpoints_convert.load"}
    assert violations(graph) == []


def test_no_file_imports_another_in_a_circle():
    assert cycles(import_graph(ROOT)) == []


# The checker itself, on a constructed tree: each kind of bad edge and a cycle must be reported.

def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_reports_bad_edges_and_cycles(tmp_path):
    write_tree(tmp_path, {
        "ldm/__init__.py": "def __getattr__(name):\n    from .pipeline import StableDiffusion\n",
        "ldm/config.py": "",
        "ldm/pipeline.py": "from . import tasks\nfrom checkpoints_convert.load import read\n",
        "ldm/tasks/__init__.py": "from .txt2img import txt2img\n",
        "ldm/tasks/txt2img.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..pipeline import SD\n"
                                "from samplers import SAMPLERS\n",
        "ldm/cli/__init__.py": "from .. import __version__\nfrom ..pipeline import StableDiffusion\n",
        "samplers/__init__.py": "from .ddim import sample_ddim\nSAMPLERS = {}\n",
        "samplers/ddim.py": "import ldm.config\n",  # bad: samplers import nothing of the project
        "tokenizer/__init__.py": "",
        "checkpoints_convert/__init__.py": "",
        "checkpoints_convert/load.py": "from ldm.config import PRESETS\n",
        "checkpoints_convert/diffusers.py": "def f():\n    from ldm.pipeline import StableDiffusion\n",  # bad, lazy
        "ldm/modules/__init__.py": "",
        "ldm/modules/unet.py": "from ..tasks import txt2img\n",  # bad: modules know only the config
        "ldm/outputs.py": "from .cli import main\n",  # bad: the library never imports the CLI
    })
    graph = import_graph(tmp_path)
    assert graph["ldm.tasks.txt2img"] == {"samplers"}  # the TYPE_CHECKING import is no dependency
    assert graph["ldm.cli"] == {"ldm", "ldm.pipeline"}  # `from .. import __version__`: the package ldm
    assert sorted(v.split(":")[0] for v in violations(graph)) == [
        "checkpoints_convert.diffusers imports ldm.pipeline",
        "ldm.modules.unet imports ldm.tasks.txt2img",
        "ldm.outputs imports ldm.cli",
        "samplers.ddim imports ldm.config",
    ]
    assert cycles(graph) == []
    write_tree(tmp_path, {"ldm/config.py": "from .pipeline import StableDiffusion\n"})
    [cycle] = cycles(import_graph(tmp_path))
    assert cycle[0] == cycle[-1] and sorted(cycle[1:]) == ["checkpoints_convert.load", "ldm.config", "ldm.pipeline"]
    # A submodule that imports its own package's __init__, which imports the submodule: a cycle too.
    write_tree(tmp_path, {"ldm/config.py": "", "samplers/ddim.py": "from samplers import SAMPLERS\n"})
    [cycle] = cycles(import_graph(tmp_path))
    assert sorted(cycle[1:]) == ["samplers", "samplers.ddim"]
