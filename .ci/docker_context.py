#!/usr/bin/env python3
"""Copies a directory through its .dockerignore, as `docker build` would send it.

Usage: docker_context.py SRC DEST      copy what Docker would send into DEST (new)
       docker_context.py --list SRC    print those paths instead

The rules follow Docker's (moby/patternmatcher): one pattern per line, `#` comments,
a leading `/` ignored, `*` and `?` never crossing `/`, `**` any number of directories,
`!` re-including, the last matching pattern winning, and a pattern that matches a
directory matching everything below it. This machine cannot pull base images, so CI
builds in such a copy instead of running `docker build` (see .ci/docker-context-build.sh).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """patternmatcher's translation of one cleaned pattern into a regular expression."""
    out = "^"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out += re.escape(ch)
            else:
                body = pattern[i + 1 : end]
                if body.startswith("^") or body.startswith("!"):
                    body = "^" + body[1:]
                out += "[" + body.replace("\\", "\\\\") + "]"
                i = end
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


class DockerIgnore:
    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, str, re.Pattern[str]]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            if negated:
                line = line[1:].strip()
            cleaned = os.path.normpath(line).lstrip("/")
            if cleaned in ("", "."):
                continue
            self.rules.append((negated, cleaned, compile_pattern(cleaned)))

    def excluded(self, path: str) -> bool:
        """Whether `path` (relative, `/`-separated) stays out of the context."""
        parents = path.split("/")
        candidates = ["/".join(parents[: i + 1]) for i in range(len(parents))]
        excluded = False
        for negated, _, regex in self.rules:
            if any(regex.match(c) for c in candidates):
                excluded = not negated
        return excluded

    def may_reinclude_below(self, directory: str) -> bool:
        """Whether a `!` pattern could bring back something under an excluded directory."""
        for negated, text, _ in self.rules:
            if not negated:
                continue
            literal = re.split(r"[*?\[\\]", text, maxsplit=1)[0]
            if literal == "" or literal.startswith(directory + "/") or (directory + "/").startswith(literal):
                return True
        return False


def context_files(src: Path) -> list[str]:
    ignore_file = src / ".dockerignore"
    rules = DockerIgnore(ignore_file.read_text() if ignore_file.is_file() else "")
    files: list[str] = []
    for root, dirs, names in os.walk(src):
        rel_root = Path(root).relative_to(src).as_posix()
        prefix = "" if rel_root == "." else rel_root + "/"
        kept = []
        for d in sorted(dirs):
            rel = prefix + d
            if rules.excluded(rel) and not rules.may_reinclude_below(rel):
                continue
            kept.append(d)
        dirs[:] = kept
        for name in sorted(names):
            rel = prefix + name
            if not rules.excluded(rel):
                files.append(rel)
    return files


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--list":
        for rel in context_files(Path(argv[2])):
            print(rel)
        return 0
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    src, dest = Path(argv[1]), Path(argv[2])
    if dest.exists():
        print(f"{dest} exists: give a new directory", file=sys.stderr)
        return 2
    files = context_files(src)
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        # Fresh modification times, not copy2's: cargo must see the copy as changed
        # sources and compile it, or a build reusing the tree's target/ would take its
        # fingerprints (and the tree's own files) as up to date and prove nothing.
        shutil.copy(src / rel, target, follow_symlinks=False)
    print(f"docker context: {len(files)} files copied to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
