#!/usr/bin/env python3
"""The import graph of the `kafkactor` crate, checked: dependencies flow one way.

Usage: scripts/layers.py [--graph] [--files]

Reads every `.rs` file under src/, collects the modules each one names
(`crate::a::..`, `super::..` resolved, in `use` lines and in paths written
inline), leaving out tests (`#[cfg(test)]` modules, `tests.rs` files) and
comments, and checks two rules:

1. No import cycle between the crate's modules (the folders and files right
   under src/): a strongly connected component of more than one module fails.
2. No module names one of its own layer or a higher one: LAYERS below lists
   the layers from the leaves up; a module names only layers below its own.

Within one folder, files may name each other (a parent and its children are
one module); the check is between the crate's top-level modules, and, for the
subtree folders, `tree.rs` (which assembles the subtree) must not be named by
the folder's other files.

`--graph` prints the module graph (each module, the modules it names);
`--files` prints, for each edge, the files it comes from. Exits 1 when a rule
is broken, printing each broken edge and the files that make it.
"""

import os
import re
import sys
from collections import defaultdict

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# From the leaves up. A module may name modules of its own layer or below.
LAYERS = [
    # leaf types: no broker, no actor of the crate
    ["error", "clock", "partitioner", "backoff"],
    ["envelope"],
    ["codec", "topics"],
    ["observe"],
    ["publish"],
    ["delivery", "buckets"],
    # the clients: brokers, and the idempotency stores
    ["broker", "idempotency"],
    # the only actors that call a broker client
    ["connection"],
    # the writers
    ["producer", "dead_letter"],
    # the consumers: the subtrees
    ["subscription"],
    ["delay", "outbox"],
    # the root
    ["app"],
    # hidden modules for the crate's own benches and fuzzers: they may name anything
    ["bench_internals", "fuzz_targets"],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}

PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)::\{([^;]*)\};", re.S)


def module_of(rel):
    """The module path of a file relative to src/ (lib.rs is the root, [])."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def strip(text):
    """The file's code without comments, string literals and test modules."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    # a `#[cfg(test)]` module runs to the end of its braces
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def targets(module, is_mod_rs, code):
    """The module paths a file's code names."""
    found = []
    for m in USE_GROUP.finditer(code):
        base = m.group(1)
        for item in re.split(r",(?![^{]*\})", m.group(2)):
            item = item.strip()
            if item:
                found.append((base, item.split("::")))
    for m in PATH.finditer(code):
        if m.group(2) == "::{":
            continue
        found.append((m.group(1), [p for p in m.group(2).split("::") if p]))
    out = []
    for base, path in found:
        if base == "crate":
            out.append(path)
        else:
            # `super` is the parent of the module the file is (a mod.rs or a
            # plain file both are the module named by their path)
            here = list(module)
            rest = list(path)
            parent = here[:-1]
            while rest and rest[0] == "super":
                parent = parent[:-1]
                rest = rest[1:]
            out.append(parent + rest)
    return [t for t in out if t and t[0] not in ("self",)]


def reexports():
    """What the crate root re-exports: `crate::Name` -> the module it is from."""
    with open(os.path.join(SRC, "lib.rs"), encoding="utf-8") as fh:
        code = strip(fh.read())
    names = {}
    for m in re.finditer(r"pub use\s+([a-z_][a-z0-9_]*)((?:::[a-z_][a-z0-9_]*)*)::(\{[^}]*\}|\w+)\s*;", code):
        module = m.group(1)
        if module in ("crate", "self", "super"):
            continue
        for item in m.group(3).strip("{}").split(","):
            item = item.strip().split(" as ")[-1].strip()
            if item:
                names[item] = module
    return names


def main():
    show_graph = "--graph" in sys.argv
    show_files = "--files" in sys.argv
    edges = defaultdict(set)  # (from, to) -> files
    tree_named = []
    top = set()
    aliases = reexports()
    for root, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".rs"):
                continue
            full = os.path.join(root, f)
            rel = os.path.relpath(full, SRC)
            if f == "tests.rs" or rel == "lib.rs":
                continue
            module = module_of(rel)
            top.add(module[0])
            with open(full, encoding="utf-8") as fh:
                code = strip(fh.read())
            for t in targets(module, f == "mod.rs", code):
                t = [aliases.get(t[0], t[0])] + t[1:]
                if t[0] != module[0]:
                    edges[(module[0], t[0])].add(rel)
                elif len(t) > 1 and t[1] == "tree" and module[:2] != t[:2] and len(module) > 1:
                    tree_named.append((rel, "::".join(t)))

    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)

    if show_graph:
        for m in sorted(top):
            names = ", ".join(sorted(graph[m])) or "-"
            print(f"{m:16} -> {names}")
            if show_files:
                for b in sorted(graph[m]):
                    print(f"    {b}: {', '.join(sorted(edges[(m, b)]))}")

    broken = []
    unknown = sorted(m for m in top if m not in RANK)
    for m in unknown:
        broken.append(f"module {m} is in no layer: add it to LAYERS in scripts/layers.py")
    for (a, b), files in sorted(edges.items()):
        if a not in RANK or b not in RANK:
            continue
        if RANK[b] > RANK[a]:
            broken.append(f"{a} (layer {RANK[a]}) names {b} (layer {RANK[b]}), above it: {', '.join(sorted(files))}")
        elif RANK[b] == RANK[a]:
            broken.append(f"{a} names {b}, of its own layer (the modules of a layer are independent): {', '.join(sorted(files))}")
    for rel, t in tree_named:
        broken.append(f"{rel} names {t}: a subtree's tree.rs is named only from above")

    # cycles, whatever the layers say (Tarjan)
    index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(sorted(scc))

    sys.setrecursionlimit(10000)
    for v in sorted(top):
        if v not in index:
            visit(v)
    for scc in sccs:
        broken.append(f"import cycle between {len(scc)} modules: {', '.join(scc)}")

    print(f"{len(top)} modules, {len(edges)} edges between them, {len(sccs)} cycles")
    for b in broken:
        print("BROKEN:", b)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
