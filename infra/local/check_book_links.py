#!/usr/bin/env python3
"""Checks the links of the documentation: every relative link and every
#anchor in docs/src/**/*.md and README.md must resolve, and a book page
may link only files the book holds (under docs/src). Anchors of book pages
are read from the HTML `mdbook build docs` wrote (docs/book/), so they are the
ids mdBook really generates; README.md's own are computed from its headings
as GitHub computes them. External (http, https, mailto) links are not
fetched. Run by infra/local/book after the build; exits 1 on any broken link."""

import html.parser
import pathlib
import re
import sys
from urllib.parse import unquote

ROOT = pathlib.Path(__file__).resolve().parents[2]
SRC = ROOT / "docs" / "src"
BOOK = ROOT / "docs" / "book"

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


class Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("id", "name") and v:
                self.ids.add(v)


def prose(text, blank_code=True):
    """The lines outside code fences, with inline code spans blanked."""
    fence = None
    for n, line in enumerate(text.split("\n"), 1):
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if m:
            mark = m.group(1)
            if fence is None:
                fence = mark[0] * len(mark)
            elif mark.startswith(fence):
                fence = None
            continue
        if fence is None:
            yield n, re.sub(r"(`+)(.+?)\1", lambda c: " " * len(c.group(0)), line) if blank_code else line


def github_anchors(text):
    """Heading anchors as GitHub makes them for a markdown file."""
    seen, out = {}, set()
    for _, line in prose(text, blank_code=False):
        m = HEADING.match(line)
        if not m:
            continue
        title = m.group(2)
        title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)  # links keep their text
        title = title.replace("`", "")
        title = re.sub(r"<[^>]+>", "", title)
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        k = seen.get(slug, 0)
        seen[slug] = k + 1
        out.add(slug if k == 0 else f"{slug}-{k}")
    return out




def book_ids(page):
    html_file = BOOK / page.relative_to(SRC).with_suffix(".html")
    if not html_file.exists():
        return None
    p = Ids()
    p.feed(html_file.read_text(encoding="utf-8"))
    return p.ids


def main():
    if not BOOK.is_dir():
        print(f"check_book_links: {BOOK} is missing: run `mdbook build docs` first", file=sys.stderr)
        return 1
    pages = sorted(p for p in SRC.rglob("*.md"))
    files = [ROOT / "README.md"] + pages
    errors = []
    anchors = {}

    def anchors_of(path):
        if path not in anchors:
            if path.is_relative_to(SRC):
                anchors[path] = book_ids(path)
            else:
                anchors[path] = github_anchors(path.read_text(encoding="utf-8"))
        return anchors[path]

    for page in pages:
        if page.name != "SUMMARY.md" and book_ids(page) is None:
            errors.append(f"{page.relative_to(ROOT)}: not in SUMMARY.md, so the book has no page for it")

    for f in files:
        text = f.read_text(encoding="utf-8")
        raw = text.split("\n")
        for n, line in prose(text):
            targets = [m.group(1) for m in LINK.finditer(line)]
            m = REFDEF.match(raw[n - 1])
            if m:
                targets.append(m.group(1))
            for t in targets:
                if re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I):
                    continue  # http:, https:, mailto:: not fetched
                where = f"{f.relative_to(ROOT)}:{n}: {t}"
                path, _, anchor = t.partition("#")
                dest = (f.parent / unquote(path)).resolve() if path else f
                if not dest.exists():
                    errors.append(f"{where}: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} does not exist")
                    continue
                if f.is_relative_to(SRC) and not dest.is_relative_to(SRC):
                    errors.append(f"{where}: a book page links a file outside docs/src, which the built book does not hold "
                                  "(copy it under docs/src, as the benchmark chart is)")
                    continue
                if anchor:
                    if dest.suffix != ".md":
                        errors.append(f"{where}: an anchor into a file that is not markdown cannot be checked")
                        continue
                    ids = anchors_of(dest)
                    if ids is None:
                        errors.append(f"{where}: {dest.relative_to(ROOT)} is not a page of the book")
                    elif unquote(anchor) not in ids:
                        errors.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    for e in errors:
        print(f"broken link: {e}", file=sys.stderr)
    checked = len(files)
    if errors:
        print(f"check_book_links: {len(errors)} broken link(s) in {checked} files", file=sys.stderr)
        return 1
    print(f"check_book_links: every relative link and anchor resolves ({checked} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
