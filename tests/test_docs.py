"""The README and the MkDocs site stay joined up: `mkdocs build --strict` (in .ci/run) checks the links
inside docs/, these check what it cannot see (the README's links into docs/, pages left out of the nav)
and that the build stays offline."""

import ast
import re
import unicodedata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def slug(heading: str) -> str:
    """A heading's anchor as Python-Markdown's toc extension (MkDocs' default) writes it."""
    explicit = re.search(r"\{#([\w-]+)\}\s*$", heading)
    if explicit:
        return explicit.group(1)
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a '# comment' in a code block is no heading
    return {slug(line.lstrip("#").strip()) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def relative_links(markdown: str) -> list[tuple[str, str]]:
    """(path, anchor) of every inline link that is not a URL or an anchor on the same page."""
    links = re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", markdown, flags=re.S))
    return [tuple((link.split("#", 1) + [""])[:2]) for link in links if not re.match(r"[a-z]+:|#", link)]


def nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_readme_links_resolve_to_files_and_headings():
    links = relative_links((ROOT / "README.md").read_text())
    assert len([path for path, _ in links if path.startswith("docs/")]) >= 10, "the README should point into docs/"
    for path, anchor in links:
        target = ROOT / path
        assert target.exists(), f"README links to {path}, which does not exist"
        if anchor:
            assert anchor in anchors(target), f"README links to {path}#{anchor}; {path} has no such heading"


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = nav_pages(config["nav"])
    pages = sorted(str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, "add the page to mkdocs.yml's nav (or remove the nav entry)"


def test_the_site_builds_offline():
    """Material fetches Google Fonts unless told not to, and its privacy and social plugins download
    assets at build time; CI and a user's laptop may have no network."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["theme"]["name"] == "material" and config["theme"]["font"] is False
    plugins = [next(iter(p)) if isinstance(p, dict) else p for p in config["plugins"]]
    assert not {"privacy", "social", "material/privacy", "material/social"} & set(plugins)
    assert "mkdocstrings" in plugins


def test_slug_matches_the_toc_extension():
    assert slug("Installing: what comes with it, and the extras") == "installing-what-comes-with-it-and-the-extras"
    assert slug("What a `RunResult` does") == "what-a-runresult-does"
    assert slug("Serving throughput (2026-11-28) {#serving-throughput}") == "serving-throughput"


# --- code blocks: fences that close, Python that parses ---------------------------------------------

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def markdown_files() -> list[Path]:
    """Every Markdown file the repository tracks (the README, docs/, examples/, deploy/, package notes)."""
    skip = {".git", "venv", "site", "build", "node_modules", ".pytest_cache"}  # and every .venv* (CI's are two)
    return sorted(path for path in ROOT.rglob("*.md")
                  if not any(part in skip or part.startswith(".venv") for part in path.relative_to(ROOT).parts)
                  and not path.parent.name.endswith(".egg-info"))


def code_blocks(markdown: str) -> tuple[list[tuple[int, str, str]], list[str]]:
    """(line of the opening fence, info string, code) of each fenced block, read as CommonMark does (a
    fence closes on a line of the same character, at least as long, with nothing after it), and the
    fences that do not pair up: one still open at the end, and an opening fence with a language
    inside a block whose fence is no longer than its own: CommonMark reads it as code (a stray fence above)."""
    blocks, problems, opened, body = [], [], None, []
    for number, line in enumerate(markdown.splitlines(), 1):
        match = FENCE.match(line)
        same_kind = match and opened and match["fence"][0] == opened[1][0] and len(match["fence"]) >= len(opened[1])
        if opened is None:
            if match and not (match["fence"][0] == "`" and "`" in match["info"]):
                opened, body = (number, match["fence"], match["info"].strip(), len(match["indent"])), []
        elif same_kind and not match["info"].strip():
            blocks.append((opened[0], opened[2], "\n".join(line[opened[3]:] for line in body)))
            opened = None
        else:
            if same_kind:
                problems.append(f"line {number}: {line.strip()!r} opens no block: the fence at line {opened[0]} "
                                "is still open (a stray fence before it?)")
            body.append(line)
    if opened:
        problems.append(f"line {opened[0]}: this fence never closes")
    return blocks, problems


def python_source(code: str) -> str:
    """A block's Python: as written, or the statements of a `>>>` session (its output left out)."""
    if not code.lstrip().startswith(">>>"):
        return code
    import doctest
    return "\n".join(example.source for example in doctest.DocTestParser().get_examples(code))


def test_every_markdown_files_code_fences_close():
    """A fence left open turns the rest of the page into code (a heading and its prose vanish)."""
    assert len(markdown_files()) >= 20
    problems = {str(path.relative_to(ROOT)): code_blocks(path.read_text())[1] for path in markdown_files()}
    assert {path: found for path, found in problems.items() if found} == {}


def test_every_python_block_in_the_readme_and_docs_parses():
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    broken, seen = [], 0
    for page in pages:
        for line, info, code in code_blocks(page.read_text())[0]:
            if info.split(" ")[0].strip("{}.").lower() not in ("python", "py", "pycon"):
                continue
            seen += 1
            try:
                ast.parse(python_source(code))
            except SyntaxError as err:
                broken.append(f"{page.relative_to(ROOT)}:{line + (err.lineno or 0)}: {err.msg}")
    assert seen >= 10 and broken == []


def test_the_fence_reader_finds_an_unclosed_fence_and_skips_a_closed_one():
    assert code_blocks("```python\nx = 1\n```\ntext\n")[1] == []
    assert code_blocks("```python\nx = 1\n```\n```\nstray\n")[1] == ["line 4: this fence never closes"]
    (stray,) = code_blocks("```\nstray\n\n```python\nx = 1\n```\n")[1]  # balanced in number, not in pairs
    assert stray.startswith("line 4: '```python' opens no block: the fence at line 1")
    assert code_blocks("````md\n```python\nx\n```\n````\n") == ([(1, "md", "```python\nx\n```")], [])
    assert code_blocks("  ```py\n  y = 2\n  ```\n")[0] == [(1, "py", "y = 2")]
    assert ast.parse(python_source(">>> a = 1\n>>> a\n1\n")) and python_source(">>> a\n1\n") == "a\n"
