#!/usr/bin/env python3
"""Fails when the files of one crate import each other in a loop.

Every `.rs` file under a crate's `src/` is a module. An edge A -> B is drawn when A names B by
path (`crate::b::..`, `super::b`, `self::b`, or `b::` for a child of A), in a `use` line or in code.
A file's own `mod tests` and doc comments do not count. Any strongly connected set of two or more
files is a loop; the script prints each loop and exits 1.

`.ci/import-loops.allow` lists the files of loops not yet taken apart (one path per line, `#`
comments). A loop passes only when every file in it is listed, and every listed file must still
be in a loop, so the list can only shrink: a new loop, a loop that grows, or a stale entry fails.
Usage: import-loops.py [workspace-root]
"""
import json, os, re, subprocess, sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP_RE = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\}", re.S)


def crates():
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"], cwd=ROOT))
    for pkg in meta["packages"]:
        for target in pkg["targets"]:
            if target["kind"][0] in ("lib", "bin") and target["src_path"].startswith(ROOT):
                yield pkg["name"] + ":" + target["name"], target["src_path"]


def module_files(root_file):
    """Maps module path tuples to files, following `mod x;` declarations from the crate root."""
    mods = {}

    def visit(path, modpath):
        mods[modpath] = path
        text = strip(open(path).read())
        base = os.path.dirname(path)
        if not (os.path.basename(path) in ("lib.rs", "main.rs", "mod.rs")):
            base = os.path.join(base, os.path.splitext(os.path.basename(path))[0])
        for m in re.finditer(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;", text, re.M):
            name = m.group(1)
            for cand in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
                if os.path.exists(cand):
                    visit(cand, modpath + (name,))
                    break

    visit(root_file, ())
    return mods


def strip(text):
    """Drops comments, string literals and `#[cfg(test)] mod tests { .. }` blocks."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{", text)
    if m:
        text = text[: m.start()]
    return text


def resolve(mods, here, head, rest):
    if head == "crate":
        base = ()
    elif head == "self":
        base = here
    else:
        base = here[:-1]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    path = base
    best = None
    for part in rest:
        if part == "super":
            path = path[:-1]
            continue
        path = path + (part,)
        if path in mods:
            best = path
        else:
            break
    return best


def loops_of(root_file):
    mods = module_files(root_file)
    edges = {m: set() for m in mods}
    for modpath, path in mods.items():
        text = strip(open(path).read())
        refs = []
        for g in GROUP_RE.finditer(text):
            prefix = [p for p in g.group(2).split("::") if p]
            for item in re.split(r",", g.group(3)):
                item = item.strip().split("::")[0].strip()
                if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", item) and item != "self":
                    refs.append((g.group(1), prefix + [item]))
                elif item == "self":
                    refs.append((g.group(1), prefix))
        for m in PATH_RE.finditer(text):
            refs.append((m.group(1), [p for p in m.group(2).split("::") if p]))
        for head, rest in refs:
            target = resolve(mods, modpath, head, rest)
            if target is not None and target != modpath and mods[target] != path:
                # A parent naming its own child module is declaring it, not importing it
                # back; only count it when the child also names the parent.
                edges[modpath].add(target)
    return mods, edges


def sccs(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.remove(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            strong(v)
    return [c for c in out if len(c) > 1]


# Which workspace crates a crate may not depend on (normal or dev), so dependencies point one way:
# protocol crates below the runtime, the runtime below the roles, no role on another except the
# node running the witness service inside a Tier 1 node.
SANS_IO = ["ztmesh-core", "ztmesh-pki", "ztmesh-gossip", "ztmesh-dtn", "ztmesh-tlog",
           "ztmesh-attest", "ztmesh-trust", "ztmesh-membership", "ztmesh-sim"]
IO = ["ztmesh-runtime", "ztmesh-ca", "ztmesh-witness", "ztmesh-node", "ztmesh-lab", "ztmesh"]
FORBIDDEN = {name: IO for name in SANS_IO}
FORBIDDEN.update({
    "ztmesh-runtime": ["ztmesh-ca", "ztmesh-witness", "ztmesh-node", "ztmesh-lab", "ztmesh"],
    "ztmesh-ca": ["ztmesh-node", "ztmesh-lab", "ztmesh"],
    "ztmesh-witness": ["ztmesh-ca", "ztmesh-node", "ztmesh-lab", "ztmesh"],
    "ztmesh-node": ["ztmesh-ca", "ztmesh-lab", "ztmesh"],
    "ztmesh-lab": ["ztmesh"],
})


def layering():
    """Crate dependencies that point the wrong way, as messages."""
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"], cwd=ROOT))
    out = []
    for pkg in meta["packages"]:
        for dep in pkg["dependencies"]:
            if dep["name"] in FORBIDDEN.get(pkg["name"], []):
                kind = dep["kind"] or "normal"
                out.append(f"{pkg['name']} must not depend on {dep['name']} ({kind} dependency)")
    return out


def allowed():
    path = os.path.join(ROOT, ".ci", "import-loops.allow")
    if not os.path.exists(path):
        return set()
    out = set()
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(line)
    return out


def main():
    allow = allowed()
    seen_allowed = set()
    bad = 0
    known = 0
    count = 0
    for name, root_file in crates():
        count += 1
        mods, edges = loops_of(root_file)
        for comp in sccs(edges):
            files = sorted(os.path.relpath(mods[m], ROOT) for m in comp)
            if set(files) <= allow:
                known += 1
                seen_allowed |= set(files)
                print(f"known import loop in {name} ({len(files)} files, listed in .ci/import-loops.allow)")
                continue
            bad += 1
            print(f"import loop in {name} ({len(files)} files):")
            for f in files:
                print(f"  {f}")
            members = set(comp)
            for m in sorted(comp):
                for t in sorted(edges[m] & members):
                    print(f"    {os.path.relpath(mods[m], ROOT)} -> {os.path.relpath(mods[t], ROOT)}")
    wrong_way = layering()
    for message in wrong_way:
        print(message)
    bad += len(wrong_way)
    stale = sorted(allow - seen_allowed)
    for f in stale:
        print(f"{f} is listed in .ci/import-loops.allow but is in no loop any more: remove it")
    if bad or stale:
        print(f"{bad} new or grown import loop(s), {len(stale)} stale allow-list entries")
        sys.exit(1)
    print(f"no new import loops in {count} crate targets ({known} known loop(s) left to take apart)")


if __name__ == "__main__":
    main()
