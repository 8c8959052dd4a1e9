"""The README and docs/: the README stays a front page, and every relative link in them (and in
benchmarks/README.md) resolves, to a file and to a heading."""

import os
import re

import pytest

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPOSITORY, "docs")
README = os.path.join(REPOSITORY, "README.md")
README_MAX_LINES = 250
IMAGE_MAX_BYTES = 200_000
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"(`+).+?\1", re.S)
# [text](target) and ![alt](target), with an optional "title" after the target.
LINK = re.compile(r"(!?)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def pages():
    """README.md, benchmarks/README.md and every Markdown page under docs/, as paths."""
    found = [README, os.path.join(REPOSITORY, "benchmarks", "README.md")]
    for folder, _, names in os.walk(DOCS):
        found += [os.path.join(folder, name) for name in sorted(names) if name.endswith(".md")]
    return found


def prose(path):
    """The page's text without code blocks and code spans, where a link is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", open(path, encoding="utf-8").read()))


def links(path):
    """The page's relative links: (is an image, target), web and mail addresses left out."""
    return [
        (bool(image), target)
        for image, target in LINK.findall(prose(path))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I)
    ]


def anchors(path):
    """The #anchors GitHub gives the page's headings: lower case, punctuation dropped, spaces as
    hyphens, and -1, -2 … after a repeated one."""
    seen = {}
    found = set()
    text = FENCE.sub("", open(path, encoding="utf-8").read())
    for heading in HEADING.findall(text):
        heading = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(path, root=REPOSITORY):
    """Each relative link of the page that does not resolve inside `root`, with why."""
    broken = []
    for image, target in links(path):
        file_part, _, anchor = target.partition("#")
        resolved = (
            os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        )
        if not os.path.exists(resolved):
            broken.append(f"{target}: no such file")
        elif not resolved.startswith(root + os.sep):
            broken.append(f"{target}: outside the repository")
        elif anchor and not resolved.endswith(".md"):
            broken.append(f"{target}: an anchor into a file that is not Markdown")
        elif anchor and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {os.path.relpath(resolved, root)}")
        elif image and os.path.getsize(resolved) > IMAGE_MAX_BYTES:
            broken.append(f"{target}: {os.path.getsize(resolved)} bytes, over {IMAGE_MAX_BYTES}")
    return broken


def test_the_readme_is_a_front_page_of_at_most_250_lines():
    with open(README, encoding="utf-8") as readme:
        lines = readme.read().splitlines()
    assert len(lines) <= README_MAX_LINES, len(lines)


@pytest.mark.parametrize("path", pages(), ids=lambda path: os.path.relpath(path, REPOSITORY))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        os.path.normpath(os.path.join(REPOSITORY, target.partition("#")[0]))
        for _, target in links(README)
    }
    docs_pages = [path for path in pages() if path != README]
    assert docs_pages, "docs/ has no pages"
    assert [path for path in docs_pages if path not in linked] == []


def test_a_missing_file_and_a_missing_heading_are_found(tmp_path):
    """The link check can fail: a missing file and a missing heading are named, while a heading
    with code and punctuation, a repeated heading, code and a web address pass."""
    (tmp_path / "other.md").write_text("# The `build.py` cycle: limits\n\n## Limits\n\n## Limits\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[good](other.md#the-buildpy-cycle-limits) [again](other.md#limits-1)\n"
        "[gone](missing.md) [no heading](other.md#quota) `[code](missing.md)`\n"
        "[web](https://example.com/missing.md)\n"
    )
    assert broken_links(str(page), root=str(tmp_path)) == [
        "missing.md: no such file",
        "other.md#quota: no heading #quota in other.md",
    ]


def test_the_readme_commands_are_makefile_targets():
    """`make demo` and `make test`, as the README shows them, name targets of the Makefile."""
    blocks = re.findall(r"```sh\n(.*?)```", open(README, encoding="utf-8").read(), re.S)
    shown = set(re.findall(r"^make ([\w-]+)", "\n".join(blocks), re.M))
    makefile = open(os.path.join(REPOSITORY, "Makefile"), encoding="utf-8").read()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    assert {"demo", "test"} <= shown
    assert shown - targets == set()
