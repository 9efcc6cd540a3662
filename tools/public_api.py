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
    "Removed and added names; a name that moved to another module is reported as moved."
    where_new = {n: m for m, ns in new.items() for n in ns}
    where_old = {n: m for m, ns in old.items() for n in ns}
    L = []
    for n in sorted(where_old):
        if n not in where_new: L.append(f"- removed `{where_old[n]}.{n}`")
        elif where_new[n] != where_old[n]: L.append(f"- moved `{where_old[n]}.{n}` -> `{where_new[n]}.{n}`")
    L += [f"- added `{where_new[n]}.{n}`" for n in sorted(where_new) if n not in where_old]
    return "\n".join(L) or "no change"


if __name__ == "__main__":
    roots = sys.argv[1:] or [str(Path(__file__).resolve().parents[1])]
    if len(roots) == 1:
        for mod, names in public_api(Path(roots[0])).items(): print(f"{mod}: {', '.join(names)}")
    else:
        print(compare(public_api(Path(roots[0])), public_api(Path(roots[1]))))
