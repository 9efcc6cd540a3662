"""Print the house-style figures of a checkout (issue 16): module sizes, long functions, exported-cell sizes,
definitions per exported cell, and public functions never called in their own notebook.

Usage: python tools/code_metrics.py [ROOT] [--package multiview_reg] [--limit-module 600] [--limit-func 80]

Definitions used (so before/after figures compare like with like):
- code lines: non-blank lines that are not comments (docstrings count as code);
- function length: source lines from `def` to the function's last line (decorators excluded), every function
  and method, nested ones too;
- exported cell: a code cell with an `#| export`/`#| exports` directive in a notebook with `#| default_exp`;
  its size is its number of non-blank lines without the `#|` directive lines (import cells counted too);
- definitions: top-level `def`/`class` statements of an exported cell (public and private);
- "followed by a use": the next code cell names something the exported cell defines;
- "never called": a public top-level function of an exported cell whose name is not called (`name(...)`,
  `obj.name(...)`) and not passed as a value in any non-exported code cell of the same notebook.
"""
from __future__ import annotations
import argparse, ast, json, re, statistics
from pathlib import Path

_DIRECTIVE = re.compile(r"^\s*#\s*\|\s*(\w+)")


def code_lines(text: str) -> int:
    "Non-blank, non-comment lines of Python source."
    return sum(1 for l in text.splitlines() if l.strip() and not l.strip().startswith("#"))


def _parse(src: str):
    "Parse notebook cell source, blanking IPython magics and shell lines; None if it still fails."
    lines = ["" if l.lstrip().startswith(("%", "!")) else l for l in src.splitlines()]
    try: return ast.parse("\n".join(lines))
    except SyntaxError: return None


def module_sizes(pkg: Path) -> dict:
    "Code lines per generated module (the module index `_modidx.py` excluded)."
    return {p.name: code_lines(p.read_text()) for p in sorted(pkg.glob("*.py")) if p.name != "_modidx.py"}


def long_functions(pkg: Path, limit: int = 80) -> list:
    "Functions and methods longer than `limit` source lines, as (module, qualified name, lines), longest first."
    out = []
    for p in sorted(pkg.glob("*.py")):
        if p.name == "_modidx.py": continue
        tree = ast.parse(p.read_text())
        def walk(node, prefix=""):
            for ch in ast.iter_child_nodes(node):
                if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = ch.end_lineno - ch.lineno + 1
                    if n > limit: out.append((p.stem, prefix + ch.name, n))
                    walk(ch, prefix + ch.name + ".")
                elif isinstance(ch, ast.ClassDef): walk(ch, prefix + ch.name + ".")
                else: walk(ch, prefix)
        walk(tree)
    return sorted(out, key=lambda t: -t[2])


def _directives(src: str) -> set:
    return {m.group(1) for l in src.splitlines() if (m := _DIRECTIVE.match(l))}


def _body(src: str) -> str:
    return "\n".join(l for l in src.splitlines() if not _DIRECTIVE.match(l))


def notebook_cells(nbs: Path) -> list:
    "Per exporting notebook: (notebook name, list of (is_exported, source)) for its code cells."
    out = []
    for p in sorted(nbs.glob("*.ipynb")):
        if p.name.startswith("_"): continue
        cells = json.loads(p.read_text())["cells"]
        code = [("".join(c["source"]) if isinstance(c["source"], list) else c["source"])
                for c in cells if c["cell_type"] == "code"]
        if not any("default_exp" in _directives(s) for s in code): continue
        out.append((p.name, [(bool(_directives(s) & {"export", "exports"}), s) for s in code]))
    return out


def _top_defs(tree) -> list:
    return [n for n in (tree.body if tree else []) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def _used_names(tree) -> set:
    "Names a cell uses (loads of a name, attribute names)."
    if tree is None: return set()
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load): out.add(n.id)
        elif isinstance(n, ast.Attribute): out.add(n.attr)
    return out


def cell_metrics(nbs: Path, big: int = 60) -> dict:
    "Exported-cell figures over all exporting notebooks."
    sizes, defs, followed, largest, public, uncalled = [], [], [], (0, ""), 0, []
    for name, cells in notebook_cells(nbs):
        other_used = set()
        for exp, src in cells:
            if not exp: other_used |= _used_names(_parse(src))
        for i, (exp, src) in enumerate(cells):
            if not exp: continue
            n = sum(1 for l in _body(src).splitlines() if l.strip())
            sizes.append(n)
            if n > largest[0]: largest = (n, f"{name} cell {i}")
            tree = _parse(src)
            d = _top_defs(tree)
            if not d: continue  # import / constant cells: size counted, not definitions
            defs.append(len(d))
            nxt = next((s for e, s in cells[i + 1:] if not e), None) if i + 1 < len(cells) and not cells[i + 1][0] else None
            followed.append(bool(nxt) and bool({x.name for x in d} & _used_names(_parse(nxt))))
            for f in d:
                if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and not f.name.startswith("_"):
                    public += 1
                    if f.name not in other_used: uncalled.append(f"{name}:{f.name}")
    return dict(n_cells=len(sizes), median=statistics.median(sizes) if sizes else 0,
                over=sum(s > big for s in sizes), big=big, largest=largest,
                defs_mean=statistics.mean(defs) if defs else 0, defs_median=statistics.median(defs) if defs else 0,
                multi_def=sum(x > 1 for x in defs), n_def_cells=len(defs),
                followed=(sum(followed) / len(followed)) if followed else 0,
                public=public, uncalled=uncalled)


def report(root: Path, package: str = "multiview_reg", limit_module: int = 600, limit_func: int = 80) -> str:
    "The metrics of the checkout at `root`, as Markdown text."
    pkg, nbs = root / package, root / "nbs"
    sizes = module_sizes(pkg)
    big = max(sizes, key=sizes.get)
    lf = long_functions(pkg, limit_func)
    cm = cell_metrics(nbs)
    L = [f"# Code metrics of {root}", "",
         f"- largest module: **{big} {sizes[big]} code lines** (limit {limit_module}); "
         f"modules over the limit: {sum(v > limit_module for v in sizes.values())}",
         f"- functions over {limit_func} lines: **{len(lf)}**",
         f"- exported cells: {cm['n_cells']}, median **{cm['median']} lines**, over {cm['big']} lines: **{cm['over']}**, "
         f"largest **{cm['largest'][0]}** ({cm['largest'][1]})",
         f"- definitions per exported cell (cells that define something: {cm['n_def_cells']}): mean "
         f"**{cm['defs_mean']:.2f}**, median {cm['defs_median']}, cells with more than one: {cm['multi_def']}",
         f"- exported cells with definitions followed by a cell that uses them: **{cm['followed']:.0%}**",
         f"- public functions never called in their own notebook: **{len(cm['uncalled'])} of {cm['public']}**",
         "", "## Code lines per module", "", "| module | code lines |", "|---|---:|"]
    L += [f"| {k} | {v} |" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])]
    L += ["", f"## Functions over {limit_func} lines", "", "| module | function | lines |", "|---|---|---:|"]
    L += [f"| {m} | {f} | {n} |" for m, f, n in lf]
    L += ["", "## Public functions never called in their own notebook", ""]
    L += [", ".join(f"`{u}`" for u in cm["uncalled"]) or "none"]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--package", default="multiview_reg")
    ap.add_argument("--limit-module", type=int, default=600)
    ap.add_argument("--limit-func", type=int, default=80)
    a = ap.parse_args()
    print(report(Path(a.root), a.package, a.limit_module, a.limit_func))
