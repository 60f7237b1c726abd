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
if "--src" in sys.argv:
    SRC = sys.argv[sys.argv.index("--src") + 1]

# From the leaves up. A module may name modules of its own layer or below.
LAYERS = [
    # leaf types: no broker, no actor of the crate
    ["error", "clock", "partitioner", "backoff"],
    ["envelope"],
    ["codec", "topics"],
    ["observe"],
    ["publish"],
    ["delivery", "buckets", "asyncapi"],
    # the clients: brokers, and the idempotency stores
    ["broker", "idempotency"],
    # the only actors that call a broker client
    ["connection", "config"],
    # the writers
    ["producer", "dead_letter"],
    # the consumers: the subtrees
    ["subscription"],
    ["delay", "outbox", "replay", "request"],
    # the root
    ["app"],
    # the `kafkactor` command, and its binary
    ["cli", "testing"],
    ["bin"],
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


def blank_literals(text):
    """`text` with comments removed and string and char literals emptied,
    by a scan that knows Rust's literals (raw strings, escapes, lifetimes)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 260]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = len(re.match(r'r(#*)"', text[i:]).group(1))
            end = text.find('"' + "#" * hashes, i + 2 + hashes)
            out.append('""')
            i = n if end < 0 else end + 1 + hashes
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'":
            # a char literal ('a', '\n', '\u{..}'), or a lifetime ('a)
            m = re.match(r"'(\\.[^']*|[^'\\])'", text[i:i + 12])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip(text):
    """The file's code without comments, string literals and test modules."""
    text = blank_literals(text)
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


def self_test():
    """Runs the check on a small crate with known faults: it must find each
    (a check that finds nothing proves nothing)."""
    import subprocess
    import tempfile

    files = {
        "lib.rs": "mod error;\nmod publish;\nmod app;\npub use error::Error;\n",
        # a leaf naming a higher layer, behind a string with an `r"` in it
        # and a lifetime, where a naive reader loses track of the code
        "error.rs": 'fn f<\'a>(s: &\'a str) -> &\'a str { let _ = "for"; s }\n'
        "use crate::app::Builder;\n"
        'const X: &str = "x";\n',
        "publish.rs": "use crate::Error;\n/* crate::app::Nothing */\n",
        "app.rs": "use crate::publish::X;\n#[cfg(test)]\nmod tests { use crate::app::Y; }\n",
    }
    with tempfile.TemporaryDirectory() as src:
        for name, text in files.items():
            with open(os.path.join(src, name), "w", encoding="utf-8") as fh:
                fh.write(text)
        out = subprocess.run(
            [sys.executable, __file__, "--src", src], capture_output=True, text=True
        ).stdout
    expected = [
        "BROKEN: error (layer 0) names app",
        "BROKEN: import cycle between 3 modules: app, error, publish",
    ]
    missing = [e for e in expected if e not in out]
    if missing or "publish (layer" in out:
        print("scripts/layers.py --self-test failed; it printed:\n" + out)
        return 1
    print("self-test: the check finds an upward name and a cycle, through literals and comments")
    return 0


if __name__ == "__main__":
    sys.exit(self_test() if "--self-test" in sys.argv else main())
