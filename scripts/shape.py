#!/usr/bin/env python3
"""Function length and nesting depth in `src/`, as issue 18 asks to keep them.

Prints every function longer than `--max-lines` (default 120) or nested deeper
than `--max-depth` (default 5) levels of braces inside its body, and exits 1
when there is any, so it can guard the rule. Strings, chars, comments and
`#[cfg(test)]` modules are skipped. A function's depth counts the braces
opened inside its body (its own body is depth 0; `match x { arm => { .. } }`
is 2). Data tables (a `const`/`static` initialiser) are not functions and are
not counted.

    python3 scripts/shape.py            # the report, exit 1 on a violation
    python3 scripts/shape.py --all      # every function, longest first
"""

import argparse
import pathlib
import re
import sys

FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")


def strip(text: str) -> str:
    """Blank out comments, strings and char literals, keeping newlines."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i : j + 1]))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_modules(text: str) -> str:
    """Blank out `#[cfg(test)] mod ... { ... }` blocks."""
    for m in list(re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)):
        start = m.end() - 1
        depth, j = 0, start
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        text = text[: m.start()] + re.sub(r"[^\n]", " ", text[m.start() : j + 1]) + text[j + 1 :]
    return text


def functions(path: pathlib.Path):
    text = drop_test_modules(strip(path.read_text()))
    for m in FN.finditer(text):
        # The body starts at the first `{` after the signature, unless a `;`
        # comes first (a trait method without a body).
        j = m.end()
        paren = 0
        while j < len(text):
            ch = text[j]
            if ch in "([":
                paren += 1
            elif ch in ")]":
                paren -= 1
            elif paren == 0 and ch == ";":
                j = -1
                break
            elif paren == 0 and ch == "{":
                break
            j += 1
        if j < 0 or j >= len(text):
            continue
        depth, deepest, k = 0, 0, j
        while k < len(text):
            if text[k] == "{":
                depth += 1
                deepest = max(deepest, depth)
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        first = text.count("\n", 0, m.start()) + 1
        last = text.count("\n", 0, k) + 1
        yield m.group(1), first, last - first + 1, deepest - 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-lines", type=int, default=120)
    ap.add_argument("--max-depth", type=int, default=5)
    ap.add_argument("--all", action="store_true")
    ap.add_argument("root", nargs="?", default="src")
    args = ap.parse_args()
    rows = []
    for path in sorted(pathlib.Path(args.root).rglob("*.rs")):
        for name, line, length, depth in functions(path):
            rows.append((length, depth, f"{path}:{line}", name))
    if args.all:
        for length, depth, where, name in sorted(rows, reverse=True):
            print(f"{length:5} lines  depth {depth}  {where}  {name}")
        return 0
    bad = [r for r in rows if r[0] > args.max_lines or r[1] > args.max_depth]
    for length, depth, where, name in sorted(bad, reverse=True):
        print(f"{where}: fn {name}: {length} lines, nesting {depth}")
    print(f"{len(rows)} functions, {len(bad)} over {args.max_lines} lines or nesting {args.max_depth}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
