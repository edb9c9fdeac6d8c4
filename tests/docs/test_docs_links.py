"""Every relative link in docs/*.md must lead somewhere real, and every link to code must point at
the code it names.

The docs cite code as `[samplers/ddim.py:ddim_update](../samplers/ddim.py#L38)`: link text
`path:symbol`, target the file and a line. Such a link promises that `symbol` (a function, class or
method; `Class.method` and `function.inner` are dotted) is defined in that file and that line 38
lies inside its definition. Code moves; this test is what notices when a line number has gone stale,
and its message says where the symbol is now. Links between pages (`cli.md`, `math.md#ddim`) must
resolve to an existing page and, with an anchor, to one of its headings.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))

LINK = re.compile(r"(?<!!)\[([^\]\n]+)\]\(([^)\s]+)\)")  # [text](target); not images
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_TEXT = re.compile(r"^`?(?P<path>[\w./-]+\.py):(?P<symbol>[A-Za-z_][\w.]*)`?$")
LINES = re.compile(r"^L(?P<start>\d+)(?:-L(?P<end>\d+))?$")


@dataclass(frozen=True)
class Link:
    page: Path
    text: str
    target: str

    def __str__(self) -> str:
        return f"docs/{self.page.name}: [{self.text}]({self.target})"

    @property
    def code(self) -> re.Match | None:
        """The `path:symbol` of a link to code, Markdown escapes removed (`\\_\\_call\\_\\_`)."""
        return CODE_TEXT.match(re.sub(r"\\(.)", r"\1", self.text.strip()))


def links_in(page: Path) -> list[Link]:
    """The Markdown links of a page whose target is a relative path or an anchor on the page itself
    (not a URL), outside fenced code blocks."""
    text = FENCE.sub("", page.read_text())
    return [Link(page, m.group(1), m.group(2)) for m in LINK.finditer(text)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", m.group(2))]


@lru_cache(maxsize=None)
def definitions(path: Path) -> dict[str, tuple[int, int]]:
    """Every function and class in a Python file, by dotted name -> (first line, last line);
    the first line is the first decorator's, if any."""
    found: dict[str, tuple[int, int]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                found.setdefault(name, (start, child.end_lineno))
                visit(child, name + ".")
            elif not isinstance(child, ast.expr):
                visit(child, prefix)  # definitions under if/try blocks keep their enclosing name

    visit(ast.parse(path.read_text(), filename=str(path)), "")
    return found


@lru_cache(maxsize=None)
def anchors(page: Path) -> frozenset[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", page.read_text()), re.MULTILINE)
    return frozenset(re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings)


def problems_with(link: Link) -> list[str]:
    """What is wrong with one link; empty when it is good."""
    path_part, _, fragment = link.target.partition("#")
    if not path_part:  # an anchor on the page itself
        return [] if fragment in anchors(link.page) else [f"{link}: the page has no heading with anchor #{fragment}"]
    target = (link.page.parent / path_part).resolve()
    if not target.exists():
        return [f"{link}: {path_part} does not exist"]
    if not target.is_relative_to(ROOT):
        return [f"{link}: {path_part} lies outside the repository"]
    relative = target.relative_to(ROOT).as_posix()
    code = link.code
    if target.suffix == ".md":
        if fragment and fragment not in anchors(target):
            return [f"{link}: {relative} has no heading with anchor #{fragment}"]
        return []
    lines = LINES.match(fragment)
    if code is None:
        # A plain link to a file promises that it exists, and that a #L line is inside it.
        if lines and int(lines["end"] or lines["start"]) > len(target.read_text().splitlines()):
            return [f"{link}: {relative} has only {len(target.read_text().splitlines())} lines"]
        return []
    if code["path"] != relative:
        return [f"{link}: the text names {code['path']} but the link goes to {relative}"]
    symbols = definitions(target)
    symbol = code["symbol"]
    if symbol not in symbols:
        return [f"{link}: {relative} defines no function or class {symbol}"]
    start, end = symbols[symbol]
    if lines is None:
        return [f"{link}: a `path:symbol` link needs a #L<line> target; {symbol} is at #L{start}"]
    first, last = int(lines["start"]), int(lines["end"] or lines["start"])
    if not start <= first <= last <= end:
        return [f"{link}: #{fragment} is outside {symbol}, which is defined at lines {start}-{end} of {relative}"]
    return []


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_resolve(page):
    problems = [problem for link in links_in(page) for problem in problems_with(link)]
    assert not problems, "stale links:\n" + "\n".join(problems)


def test_the_docs_cite_code():
    """The math page cites the code of every equation; a parser that found no links would pass the
    test above vacuously."""
    code_links = [link for link in links_in(DOCS / "math.md") if link.code]
    assert len(code_links) >= 20
    cited = {link.code["path"] for link in code_links}
    assert {"samplers/schedule.py", "samplers/ddim.py", "samplers/plms.py", "samplers/guidance.py",
            "samplers/prediction.py", "ldm/tasks/txt2img.py", "ldm/tasks/img2img.py", "ldm/tasks/common.py",
            "ldm/demo/train.py"} <= cited


def test_index_links_every_page():
    linked = {Path(link.target.partition("#")[0]).name for link in links_in(DOCS / "index.md")}
    missing = {p.name for p in PAGES} - linked - {"index.md"}
    assert not missing, f"docs/index.md does not link {sorted(missing)}"


# The checker itself: each kind of stale link must be reported, naming the doc, the link and the
# line where the symbol really is.

def _page(tmp_path: Path, body: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(body)
    return page


def test_checker_accepts_a_good_code_link():
    start, end = definitions(ROOT / "samplers" / "ddim.py")["ddim_update"]
    link = Link(DOCS / "math.md", "samplers/ddim.py:ddim_update", f"../samplers/ddim.py#L{end}")
    assert problems_with(link) == []


def test_checker_reports_a_stale_line_with_the_real_one():
    start, end = definitions(ROOT / "samplers" / "ddim.py")["ddim_update"]
    link = Link(DOCS / "math.md", "samplers/ddim.py:ddim_update", f"../samplers/ddim.py#L{end + 1}")
    [problem] = problems_with(link)
    assert "docs/math.md" in problem and f"#L{end + 1}" in problem and f"lines {start}-{end}" in problem


def test_checker_reports_missing_symbols_files_and_anchors():
    bad = [
        Link(DOCS / "math.md", "samplers/ddim.py:no_such_function", "../samplers/ddim.py#L1"),
        Link(DOCS / "math.md", "samplers/ddim.py:ddim_update", "../samplers/plms.py#L26"),
        Link(DOCS / "math.md", "x", "../no/such/file.py"),
        Link(DOCS / "math.md", "x", "no-such-page.md"),
        Link(DOCS / "math.md", "x", "cli.md#no-such-heading"),
        Link(DOCS / "math.md", "x", "../samplers/ddim.py#L100000"),
    ]
    for link in bad:
        assert problems_with(link), f"{link} was accepted"


def test_checker_reads_escaped_dunder_names():
    start, end = definitions(ROOT / "ldm" / "pipeline.py")["StableDiffusion.__init__"]
    good = Link(DOCS / "x.md", r"ldm/pipeline.py:StableDiffusion.\_\_init\_\_", f"../ldm/pipeline.py#L{start}")
    assert good.code["symbol"] == "StableDiffusion.__init__" and problems_with(good) == []
    stale = Link(DOCS / "x.md", good.text, f"../ldm/pipeline.py#L{end + 1}")
    assert problems_with(stale)


def test_checker_reads_methods_and_nested_functions():
    found = definitions(ROOT / "samplers" / "schedule.py")
    assert "NoiseSchedule.q_sample" in found and "DDIMCoefficients.make" in found
    start, end = found["DDIMCoefficients.make"]
    assert start < end  # the decorator line is included: @classmethod
    assert "denoiser.denoise" in definitions(ROOT / "samplers" / "denoiser.py")


def test_links_in_skips_urls_images_and_code_blocks(tmp_path):
    page = _page(tmp_path, "# Top\n[a](https://x.org/a.md) [b](#top) ![c](pic.png) [d](cli.md)\n"
                           "```\n[e](inside.md)\n```\n")
    assert [link.target for link in links_in(page)] == ["#top", "cli.md"]


def test_anchors_on_the_same_page_are_checked(tmp_path):
    page = _page(tmp_path, "# The DDIM update (eq. 12)\n[a](#the-ddim-update-eq-12) [b](#no-such-heading)\n")
    good, bad = links_in(page)
    assert problems_with(good) == [] and problems_with(bad)
