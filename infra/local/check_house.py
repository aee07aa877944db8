#!/usr/bin/env python3
"""Checks two of the house rules (docs/src/development/repository.md) that
no compiler or linter checks, so that a change cannot quietly break them:

1. No source file over 700 lines: every tracked Rust, Python, Java,
   JavaScript and shell file (scripts without an extension included). Not code, and not
   counted: template.yaml and the state machine's definition, which are
   CloudFormation and Amazon States Language documents (one resource or
   state after another, each read on its own), and data (bench results,
   JSON fixtures, lock files).
2. No two sibling Rust modules use each other: in each module folder, the
   files are the children of one module, and a name one of them defines at
   its top level, used by another, is an edge from the user to the
   definer; a cycle of such edges is refused. (A sibling glob import,
   `use super::*`, hides them from the compiler's eyes.) Not followed:
   module folders whose parent is an inline `mod m { .. }` block (there
   are none).

Run by tests/run before anything else; exits 1 with each breach named."""

import pathlib
import os
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_LINES = 700
CODE_SUFFIXES = {".rs", ".py", ".java", ".sh", ".js"}

# An item at a file's top level: `const fn f` is a function `f`, not a
# constant `fn`; `static mut X` is `X`.
DEFINITION = re.compile(
    r"^(?:pub(?:\([^)]*\))?\s+)?(?:(?:const|async|unsafe|extern\s+\"[^\"]*\")\s+)*"
    r"(?:fn|struct|enum|const|static(?:\s+mut)?|type|trait|union)\s+([A-Za-z_][A-Za-z0-9_]*)",
    re.M,
)
MACRO = re.compile(r"^macro_rules!\s*([A-Za-z_][A-Za-z0-9_]*)", re.M)
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Comments, strings (raw ones too) and char literals, matched in one pass
# so that a `//` in a string or a `"` in a char is not taken for either.
NOT_CODE = re.compile(r"""//[^\n]*|/\*.*?\*/|r(#+)".*?"\1|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])'""", re.S)


def tracked():
    # -z: names as they are (git quotes names with other than ASCII otherwise).
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    names = [os.fsdecode(n) for n in out.split(b"\0") if n]
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def is_code(path):
    if path.suffix in CODE_SUFFIXES:
        return True
    if path.suffix:
        return False
    with open(path, "rb") as f:
        return f.read(2) == b"#!"


def long_files(files):
    breaches = []
    for path in files:
        if is_code(path):
            lines = path.read_text(errors="replace").count("\n")
            if lines > MAX_LINES:
                breaches.append(f"{path.relative_to(ROOT)}: {lines} lines, over {MAX_LINES}: cut it along a seam")
    return breaches


def module_file(folder):
    """The file of the module whose children are the .rs files in `folder`."""
    if folder.name == "src":
        for name in ("lib.rs", "main.rs"):
            if (folder / name).exists():
                return folder / name
        return None
    for candidate in (folder.with_suffix(".rs"), folder / "mod.rs"):
        if candidate.exists():
            return candidate
    return None


def module_path(folder):
    """`a::b` for src/a/b, as `crate::a::b::` names a child of it."""
    parts = []
    while folder.name != "src":
        parts.append(folder.name)
        folder = folder.parent
    return "::".join(reversed(parts))


def code(path):
    text = path.read_text(errors="replace")
    return NOT_CODE.sub(lambda m: '""' if m.group(0)[:1] in "r\"" else " ", text)


def use_tree_names(tree):
    """The names a use tree brings in (`a`, `{a, b as c}`, `x::{y::Z, w}`:
    a, c; Z, w); `*` stays `*`."""
    names = set()
    for piece in re.split(r"[{},]", tree):
        piece = piece.strip()
        if not piece:
            continue
        if piece.endswith("*"):
            names.add("*")
            continue
        alias = re.search(r"\bas\s+(\w+)$", piece)
        words = WORD.findall(piece)
        if alias:
            names.add(alias.group(1))
        elif words and words[-1] != "self":
            names.add(words[-1])
    return names


# A name taken from the parent counts as used where it names an item, not
# where a local, a parameter or a field of the same name would: a type or
# constant (a capital first), or a function or module called or gone
# through (`name(`, `name::`, `name!`); never after a dot.
USED = re.compile(r"(?<![.\w])(?:([A-Z][A-Za-z0-9_]*)|([a-z_][A-Za-z0-9_]*)\s*(?=\(|::|!))")


def sibling_cycles(files):
    """Sibling A uses sibling B when A names it by path (`super::b`,
    `crate::..::b`), or takes from the parent (`use super::*` or
    `use super::{..}`) a name the parent has from B (`use b::*`, `use
    b::{..}`). A name counts as used where it is not a field or method
    (after a dot) and A does not define it itself."""
    folders = {}
    for path in files:
        if path.suffix == ".rs" and path.name not in ("mod.rs", "main.rs", "lib.rs") and "src" in path.relative_to(ROOT).parts:
            folders.setdefault(path.parent, []).append(path)
    breaches = []
    for folder, paths in sorted(folders.items()):
        parent = module_file(folder)
        if len(paths) < 2 or parent is None:
            continue
        children = {p.stem: p for p in paths}
        text = {p: code(p) for p in paths}
        defines = {p: set(DEFINITION.findall(t)) | set(MACRO.findall(t)) for p, t in text.items()}
        # What the parent has from each child, by name.
        from_child = {}
        for m in re.finditer(r"\buse\s+(?:self::)?(\w+)::([^;]*);", code(parent)):
            child, tree = m.group(1), m.group(2)
            if child not in children:
                continue
            names = use_tree_names(tree)
            if "*" in names:
                names = (names - {"*"}) | defines[children[child]]
            for name in names:
                from_child.setdefault(name, children[child])
        prefix = module_path(folder)
        edges = {p: set() for p in paths}
        for a in paths:
            t = text[a]
            for b_name, b in children.items():
                crate_path = f"crate::{prefix}::{b_name}" if prefix else f"crate::{b_name}"
                if b is not a and re.search(rf"\bsuper::{b_name}\b|{re.escape(crate_path)}\b", t):
                    edges[a].add(b)
            # Named through the parent: `super::x` (a path, or `use
            # super::x;`), `use super::{x, y}`, and with `use super::*`
            # anything the file uses and does not define.
            named = set(re.findall(r"\bsuper::(\w+)", t))
            for m in re.finditer(r"\buse\s+super::(\{[^;]*);", t):
                named |= use_tree_names(m.group(1)) - {"*"}
            if re.search(r"\buse\s+super::\*", t):
                named |= {x or y for x, y in USED.findall(t)} - defines[a]
            for name in named:
                b = from_child.get(name)
                if b is not None and b is not a:
                    edges[a].add(b)
        for cycle in cycles(edges):
            names = ", ".join(p.name for p in cycle)
            breaches.append(f"{folder.relative_to(ROOT)}: siblings use each other: {names}: move what both use to a leaf")
    return breaches


def cycles(edges):
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main():
    files = tracked()
    breaches = long_files(files) + sibling_cycles(files)
    for b in breaches:
        print(f"check_house: {b}", file=sys.stderr)
    if breaches:
        sys.exit(1)
    print(f"check_house: {len(files)} tracked files: no code file over {MAX_LINES} lines, no sibling modules using each other")


if __name__ == "__main__":
    main()
