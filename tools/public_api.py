"""Dump the public API (`__all__` of every module) of a checkout, read with `ast` (nothing is imported, so any
commit can be measured), and optionally compare two checkouts.

Usage: python tools/public_api.py [ROOT]             # one checkout: `module: name, name, ...`
       python tools/public_api.py OLD_ROOT NEW_ROOT   # what was removed / added per module
"""
from __future__ import annotations
import ast, sys
from pathlib import Path


def module_all(path: Path) -> list:
    "The names in a module's literal `__all__` (empty list if it has none)."
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def public_api(root: Path, package: str = "multiview_reg") -> dict:
    "`{module: [names]}` for every module of `package` in the checkout at `root`."
    return {p.stem: module_all(p) for p in sorted((Path(root) / package).glob("*.py")) if p.name != "_modidx.py"}


def compare(old: dict, new: dict) -> str:
    "Removed and added (module, name) pairs; a name gone from one module but new in another is reported as moved."
    pairs = lambda api: {(m, n) for m, ns in api.items() for n in ns}
    po, pn = pairs(old), pairs(new)
    gone, came = sorted(po - pn, key=lambda p: p[1]), sorted(pn - po, key=lambda p: p[1])
    came_by_name = {}
    for m, n in came: came_by_name.setdefault(n, []).append(m)
    L, moved = [], set()
    for m, n in gone:
        if n in came_by_name:
            L.append(f"- moved `{m}.{n}` -> " + ", ".join(f"`{m2}.{n}`" for m2 in came_by_name[n])); moved.add(n)
        else:
            also = sorted(m2 for m2, n2 in pn if n2 == n)
            L.append(f"- removed `{m}.{n}`" + (f" (still `{also[0]}.{n}`)" if also else ""))
    L += [f"- added `{m}.{n}`" for m, n in came if n not in moved]
    return "\n".join(L) or "no change"


if __name__ == "__main__":
    roots = sys.argv[1:] or [str(Path(__file__).resolve().parents[1])]
    if len(roots) == 1:
        for mod, names in public_api(Path(roots[0])).items(): print(f"{mod}: {', '.join(names)}")
    else:
        print(compare(public_api(Path(roots[0])), public_api(Path(roots[1]))))
