"""The README and the MkDocs site stay joined up: `mkdocs build --strict` (in .ci/run) checks the links
inside docs/, these check what it cannot see (the README's links into docs/, pages left out of the nav)
and that the build stays offline."""

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
