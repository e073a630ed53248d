#!/usr/bin/env python3
"""Import cycles between the top-level modules of src/ (the crate's
`crate::<module>` paths, in `use` lines and inline paths, comments and
doc text excluded), and the edges that break the stated direction.

    python3 scripts/module-cycles.py        # exit 1 on a cycle

A top-level module is a file or folder right under src/ (`broker`,
`station`, `stations`, ...); `src/bin` is left out (binaries sit on top).
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
PATH = re.compile(r"\bcrate::([a-z_]+)")
MACROS = {"fields"}  # crate-root macros: `crate::fields!` is no module


def top(rel):
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def code(line):
    s = line.strip()
    if s.startswith("//"):
        return ""
    return line.split("//")[0]


edges = {}
for root, _, files in os.walk(SRC):
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(root, f)
        rel = os.path.relpath(path, SRC)
        if rel.startswith("bin" + os.sep) or rel in ("lib.rs",):
            continue
        me = top(rel)
        in_test = False
        for line in open(path, encoding="utf-8"):
            if line.startswith("#[cfg(test)]"):
                in_test = True  # unit tests may reach anywhere
            if in_test:
                continue
            for m in PATH.findall(code(line)):
                if m != me and m not in MACROS:
                    edges.setdefault(me, set()).add(m)

# Tarjan's strongly connected components.
index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = n[0]; n[0] += 1
    stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        sccs.append(comp)

nodes = set(edges) | {w for ws in edges.values() for w in ws}
for v in sorted(nodes):
    if v not in index:
        visit(v)

for v in sorted(edges):
    print(f"{v:9} -> {', '.join(sorted(edges[v]))}")
cycles = [c for c in sccs if len(c) > 1]
for c in cycles:
    print("CYCLE:", " <-> ".join(sorted(c)))
if not cycles:
    print("no cycle between top-level modules")
sys.exit(1 if cycles else 0)
