#!/usr/bin/env python3
"""The package-level import graph of the checkout, and the layering it must keep.

    python tools/import_graph.py            # the graph as text: top-level packages, then units
    python tools/import_graph.py --sites    # ... with every import behind each edge (file:line)
    python tools/import_graph.py --dot      # graphviz: ... --dot | dot -Tsvg > graph.svg
    python tools/import_graph.py --check    # exit 1 listing everything against the layering (below)

Every module under ``infomin_det/``, ``pretrain/``, ``tools/`` and ``transfer_configs/`` is parsed
with ``ast`` (nothing is imported: it runs in a bare Python, without torch or detectron2). A *unit*
is a sub-package (``infomin_det.report``) or a top-level module of ``infomin_det``
(``infomin_det.errors``); ``pretrain``'s own modules form the unit ``pretrain``, ``pretrain/views/``
the unit ``pretrain.views``, every script of ``tools/`` the unit ``tools``; the launcher's
front-end modules (``SPLIT``) are units of their own. An edge ``A -> B`` says some module of A
imports some module of B:

    A -> B        at module level (importing A imports B)
    A -> B  (f)   only inside functions: still a dependency, taken when the function runs
    A ~> B        only as a string naming a module (``"pkg.mod"`` / ``"pkg.mod:attr"``) that is
                  resolved with importlib at run time: the CLI's subcommand table, a launcher worker
    A -> B  (f, ~) both, never at module level

String references are dependencies like imports and are checked against the same layers: lazy
dispatch keeps an import cheap, it does not make a lower layer free to name a higher one. Edges to
torch / torchvision / detectron2 / fvcore are drawn too (``HEAVY``), for the rules that keep
``report``, ``launch`` and the core importable without them and ``pretrain`` free of detectron2.

The layering is declared once, here, and :func:`check` (``--check``, ``tests/test_layering.py``)
refuses, each with the imports behind it:

* an edge from a layer to one its ``uses`` in ``LAYERS`` do not reach (strings included);
* an edge ``RULES`` refuses: detectron2 anywhere in ``pretrain``; ``infomin_det`` importing
  ``pretrain`` at module level; a module-level heavy import in a layer of ``IMPORTS_WITHOUT``;
* an import cycle between units (string references aside);
* a unit in no layer (a new package must be placed);
* a module of a shared ``infomin_det`` layer that only ``pretrain`` imports (move it to its user);
* a format tag (``"infomin-det/..."``) assigned at module level in more than one module.

Stdlib only.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("infomin_det", "pretrain", "tools", "transfer_configs")
HEAVY = ("torch", "torchvision", "detectron2", "fvcore")

#: modules that are units of their own instead of part of their package's unit: the launcher's
#: front-end (the ``submit`` / ``reproduce`` / ``status`` subcommands and the reproduce plan) builds
#: fine-tuning specs and reads reports; the launcher library below it runs any worker.
SPLIT = ("infomin_det.launch.submit_cli", "infomin_det.launch.reproduce_cli", "infomin_det.launch.status_cli",
         "infomin_det.launch.plan")

#: layer -> (units, the layers it may import). A unit may import units of its own layer and of every
#: layer reachable through ``uses`` (transitively); anything else is an edge against the layering.
#: Lowest first. A unit in no layer is itself an error: place every new package here.
LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # the transfer protocols' YAML files (package data)
    "configs": (("transfer_configs",), ()),
    # shared by everything, both packages: errors, atomic writes, safe reads, file hashes, the
    # weights metadata + ResNetArch, the pretrain checkpoint format, the cache root, run directories,
    # progress files, console, devices / processes, preemption, fault injection, the extension registry,
    # the optional W&B logging
    "core": (("infomin_det", "infomin_det.errors", "infomin_det.atomic", "infomin_det.untrusted",
              "infomin_det.filehash", "infomin_det.weights_meta", "infomin_det.pretrain_format",
              "infomin_det.cache", "infomin_det.rundir", "infomin_det.progress", "infomin_det.console",
              "infomin_det.dist", "infomin_det.preempt", "infomin_det.faults", "infomin_det.registry",
              "infomin_det.wandb_log"), ()),
    # libraries over the core, independent of each other
    "data": (("infomin_det.data",), ("core",)),
    "protocols": (("infomin_det.protocols",), ("core", "configs")),
    "convert": (("infomin_det.convert",), ("core",)),
    "launch": (("infomin_det.launch",), ("core",)),
    # report reads the launcher's registry and task state files to tell a run's state
    "report": (("infomin_det.report",), ("protocols", "launch")),
    # Detectron2 fine-tuning: the protocols, converted weights' records, the launcher's task
    "engine": (("infomin_det.engine",), ("protocols", "convert", "launch")),
    # pretraining: the core, the launcher, the generated data sets -- never engine/convert/report
    "pretrain": (("pretrain", "pretrain.views"), ("data", "launch")),
    # applications: the `infomin-det` CLI, its front-end subcommands, the demo, doctor
    "app": (("infomin_det.cli", "infomin_det.__main__", "infomin_det.completion", "infomin_det.doctor",
             "infomin_det.demo", *SPLIT), ("engine", "report", "pretrain", "data")),
    # checkout-only scripts
    "tools": (("tools",), ("app",)),
}


@dataclass(frozen=True)
class Rule:
    """Refuse edges from ``src`` to ``dst`` (unit or HEAVY names, fnmatch patterns) of these kinds."""

    src: str
    dst: str
    kinds: tuple[str, ...]
    why: str


TOP, FUNCTION, STRING = "top", "function", "string"
#: layer -> the HEAVY packages importing any of its modules never loads. Checked statically (no
#: module-level import of them, RULES below) and at run time, transitively, by tests/test_layering.py
#: (every module imported in a fresh interpreter). convert reads torch checkpoints, so it has torch.
IMPORTS_WITHOUT: dict[str, tuple[str, ...]] = {
    **{layer: HEAVY for layer in ("configs", "core", "data", "protocols", "launch", "report", "app")},
    "convert": ("detectron2", "fvcore"),
    "pretrain": ("detectron2", "fvcore"),
}
RULES = (
    Rule("pretrain*", "detectron2", (TOP, FUNCTION, STRING), "pretrain never imports detectron2"),
    Rule("pretrain*", "fvcore", (TOP, FUNCTION, STRING), "pretrain never imports detectron2 (fvcore is its)"),
    Rule("infomin_det*", "pretrain*", (TOP,),
         "infomin_det reaches pretrain only lazily (inside a function, or a worker / subcommand string)"),
    *(Rule(unit, heavy, (TOP,), f"layer {layer!r} imports without {heavy} (IMPORTS_WITHOUT)")
      for layer, heavies in IMPORTS_WITHOUT.items() for unit in LAYERS[layer][0] for heavy in heavies),
)


@dataclass(frozen=True)
class Site:
    path: str      # relative to ROOT
    line: int
    kind: str      # TOP | FUNCTION | STRING
    target: str    # the module imported / named


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of PACKAGES: dotted name -> file."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[_module_name(path)] = path
    return found


def unit_of(module: str) -> str:
    """The graph node a module belongs to (see the module docstring)."""
    for split in SPLIT:
        if module == split or module.startswith(split + "."):
            return split
    parts = module.split(".")
    top = parts[0]
    if top in ("tools", "transfer_configs") or len(parts) == 1:
        return top
    if top == "pretrain":
        return "pretrain.views" if parts[1] == "views" else "pretrain"
    if top in PACKAGES:
        return ".".join(parts[:2])
    return top  # third-party: its distribution's top-level name


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """``name`` if a module of ours, else its longest prefix that is one; None for third-party."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return None


_STRING_REF = re.compile(r"(%s)(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?" % "|".join(PACKAGES))


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def sites(module: str, path: Path, known: dict[str, Path]) -> list[Site]:
    """Every import (and module-naming string) in one module, with where it runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    rel = str(path.relative_to(ROOT))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    docs = _docstrings(tree)
    found: list[Site] = []

    def add(name: str, node: ast.AST, kind: str) -> None:
        top = name.split(".")[0]
        ours = _resolve(name, known)
        if ours is not None:
            found.append(Site(rel, node.lineno, kind, ours))
        elif top in HEAVY:
            found.append(Site(rel, node.lineno, kind, top))

    def visit(node: ast.AST, in_function: bool) -> None:
        kind = FUNCTION if in_function else TOP
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, kind)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            for alias in node.names:   # ``from pkg import mod`` imports the module pkg.mod
                sub = f"{stem}.{alias.name}"
                add(sub if sub in known else stem, node, kind)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
              and path != Path(__file__).resolve() and _STRING_REF.fullmatch(node.value)):  # our table: data
            name = node.value.partition(":")[0]
            if name in known:
                found.append(Site(rel, node.lineno, STRING, name))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


Edges = dict[tuple[str, str], list[Site]]


def graph() -> Edges:
    """(source unit, target unit or HEAVY name) -> the sites behind that edge; no self-edges."""
    known = modules()
    edges: Edges = {}
    for module, path in known.items():
        src = unit_of(module)
        for site in sites(module, path, known):
            dst = unit_of(site.target)
            if dst != src:
                edges.setdefault((src, dst), []).append(site)
    return dict(sorted(edges.items()))


def kind_of(sites_: list[Site]) -> str:
    """The strongest kind behind an edge: TOP over FUNCTION over STRING."""
    kinds = {s.kind for s in sites_}
    return next(k for k in (TOP, FUNCTION, STRING) if k in kinds)


def package_edges(edges: Edges) -> Edges:
    """The same edges between top-level packages (``infomin_det``, ``pretrain``, ...)."""
    out: Edges = {}
    for (src, dst), ss in edges.items():
        a, b = src.split(".")[0], dst.split(".")[0]
        if a != b:
            out.setdefault((a, b), []).extend(ss)
    return dict(sorted(out.items()))


def layer_of(unit: str) -> str | None:
    return next((name for name, (units, _) in LAYERS.items() if unit in units), None)


def reachable(layer: str) -> set[str]:
    """The layers ``layer`` may import: itself and everything its ``uses`` reach."""
    seen, todo = set(), [layer]
    while todo:
        cur = todo.pop()
        if cur not in seen:
            seen.add(cur)
            todo.extend(LAYERS[cur][1])
    return seen


def _where(ss: list[Site]) -> str:
    return ", ".join(f"{s.path}:{s.line}" + ("" if s.kind == TOP else f" ({s.kind})") for s in ss)


#: libraries of ``infomin_det`` are shared: a module of theirs that only ``pretrain`` uses lives in
#: ``pretrain``, next to its user (tests are not users)
SHARED_LAYERS = ("core", "data", "protocols", "convert", "launch")
#: a format tag (``"infomin-det/<name>"``: what a file says it is) is assigned at module level in one
#: module only; writers and readers import it from there instead of keeping copies in sync
FORMAT_TAG = re.compile(r"infomin-det/[\w.-]+")


def format_tags() -> dict[str, list[str]]:
    """Format tag -> the modules (``path:line``) that assign it to a module-level name."""
    tags: dict[str, list[str]] = {}
    for path in modules().values():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str) and FORMAT_TAG.fullmatch(value.value):
                tags.setdefault(value.value, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return tags


def importers() -> dict[str, set[str]]:
    """Module -> the other modules that import (or name) it."""
    known = modules()
    users: dict[str, set[str]] = {}
    for module, path in known.items():
        for site in sites(module, path, known):
            if site.target in known and site.target != module:
                users.setdefault(site.target, set()).add(module)
    return users


def cycles(edges: Edges) -> list[list[str]]:
    """Groups of units that import each other in a circle (string references not counted)."""
    succ: dict[str, set[str]] = {}
    for (a, b), ss in edges.items():
        if b not in HEAVY and any(s.kind != STRING for s in ss):
            succ.setdefault(a, set()).add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def strong(v: str) -> None:   # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(succ.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(succ):
        if v not in index:
            strong(v)
    return found


def check(edges: Edges | None = None) -> list[str]:
    """Every edge against LAYERS or RULES, one line each with the imports behind it; [] when clean."""
    edges = graph() if edges is None else edges
    problems = []
    for group in cycles(edges):
        problems.append(f"import cycle between units: {' <-> '.join(group)}")
    for module, users in sorted(importers().items()):
        if layer_of(unit_of(module)) in SHARED_LAYERS and all(u.split(".")[0] == "pretrain" for u in users):
            problems.append(f"{module}: in the shared layer {layer_of(unit_of(module))!r} but imported only by "
                            f"{', '.join(sorted(users))}: move it next to its user")
    for tag, where in sorted(format_tags().items()):
        if len(where) > 1:
            problems.append(f"format tag {tag!r} defined {len(where)} times ({', '.join(where)}): define it once, "
                            "import it elsewhere")
    units = {u for pair in edges for u in pair} | {unit_of(m) for m in modules()}
    for unit in sorted(u for u in units if u not in HEAVY and layer_of(u) is None):
        problems.append(f"{unit}: in no layer of LAYERS (tools/import_graph.py): place it")
    for (src, dst), ss in edges.items():
        if dst in HEAVY:
            continue
        a, b = layer_of(src), layer_of(dst)
        if a and b and b not in reachable(a):
            problems.append(f"{src} -> {dst}: layer {a!r} may not use layer {b!r}: {_where(ss)}")
    reported = set()
    for rule in RULES:
        for (src, dst), ss in edges.items():
            bad = [s for s in ss if s.kind in rule.kinds]
            if bad and (src, dst) not in reported and fnmatchcase(src, rule.src) and fnmatchcase(dst, rule.dst):
                reported.add((src, dst))
                problems.append(f"{src} -> {dst}: {rule.why}: {_where(bad)}")
    return problems


def _line(src: str, dst: str, ss: list[Site], show_sites: bool) -> str:
    kinds = {s.kind for s in ss}
    tags = [] if TOP in kinds else [t for k, t in ((FUNCTION, "f"), (STRING, "~")) if k in kinds]
    if tags == ["~"]:
        text = f"  {src} ~> {dst}"
    else:
        text = f"  {src} -> {dst}" + (f"  ({', '.join(tags)})" if tags else "")
    if show_sites:
        text += "\n" + "\n".join(f"      {s.path}:{s.line} {s.kind} {s.target}" for s in ss)
    return text


def render_text(edges: Edges, show_sites: bool = False) -> str:
    out = ["# tools/import_graph.py: A -> B imported at module level, (f) only inside functions,",
           "# A ~> B only named as a string resolved at run time (lazy dispatch), (f, ~) both",
           "", "top-level packages:"]
    out += [_line(a, b, ss, show_sites) for (a, b), ss in package_edges(edges).items() if b not in HEAVY]
    for title, want_heavy in (("units:", False), (f"units -> {' / '.join(HEAVY)}:", True)):
        out += ["", title]
        out += [_line(a, b, ss, show_sites) for (a, b), ss in edges.items() if (b in HEAVY) == want_heavy]
    out += ["", "layers (LAYERS, lowest first):"]
    out += [f"  {name:10s} uses {', '.join(uses) or '-':32s} {', '.join(units)}"
            for name, (units, uses) in LAYERS.items()]
    return "\n".join(out)


def render_dot(edges: Edges) -> str:
    out = ["digraph imports {", "  rankdir=BT; node [shape=box, fontsize=10];"]
    for name, (units, _) in LAYERS.items():
        present = [u for u in units if any(u in pair for pair in edges)]
        if present:
            out.append(f'  subgraph "cluster_{name}" {{ label="{name}"; ' + " ".join(f'"{u}";' for u in present) + " }")
    out += [f'  "{h}" [shape=ellipse, style=dashed];' for h in HEAVY if any(h == b for _, b in edges)]
    style = {TOP: "", FUNCTION: " [style=dashed]", STRING: " [style=dotted]"}
    out += [f'  "{a}" -> "{b}"{style[kind_of(ss)]};' for (a, b), ss in edges.items()]
    out.append("}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--dot", action="store_true", help="graphviz text instead of plain text")
    ap.add_argument("--sites", action="store_true", help="list the imports behind every edge (file:line kind module)")
    ap.add_argument("--check", action="store_true", help="exit 1 listing every edge against the declared layering")
    args = ap.parse_args(argv)
    edges = graph()
    if args.check:
        problems = check(edges)
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s) with the layering" if problems else "layering: ok",
              file=sys.stderr if problems else sys.stdout)
        return 1 if problems else 0
    print(render_dot(edges) if args.dot else render_text(edges, args.sites))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
