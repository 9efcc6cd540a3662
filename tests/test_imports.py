"""The package's imports: no circle between its modules, and every module imports with only the runtime
dependencies (pyproject `[project].dependencies`).

- `test_no_import_circle` reads every module with `ast` (imports inside functions count too: a lazy import is
  still a dependency) and fails on any circle between `multiview_reg` modules, naming it.
- `test_top_level_imports_are_runtime_dependencies` (fast) checks, with `ast`, that no module imports a package
  at top level (outside functions) that is neither the standard library nor a runtime dependency.
- `test_every_module_imports_in_a_fresh_venv` (slow) makes a fresh venv without the system site-packages,
  runs `pip install -e .` (no extras) and imports every module there.
"""
import ast, os, subprocess, sys, tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = "multiview_reg"


def _modules():
    "Module names of the package (the generated module index excluded)."
    return sorted(p.stem for p in (ROOT / PKG).glob("*.py") if p.stem not in ("_modidx",))


def _imports(mod, top_level_only=False):
    "(name, lineno) of every module `mod` imports: `multiview_reg.x` for the package's own, else the top package."
    tree = ast.parse((ROOT / PKG / f"{mod}.py").read_text())
    out = []
    def visit(node, in_func):
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if not top_level_only: visit(ch, True)
                continue
            if isinstance(ch, ast.Import):
                out.extend((a.name, ch.lineno) for a in ch.names)
            elif isinstance(ch, ast.ImportFrom):
                if ch.level:  # relative: `from .x import y`, `from . import x`
                    out.extend([(f"{PKG}.{ch.module}", ch.lineno)] if ch.module else [(f"{PKG}.{a.name}", ch.lineno) for a in ch.names])
                elif ch.module == PKG: out.extend((f"{PKG}.{a.name}", ch.lineno) for a in ch.names)
                elif ch.module != "__future__": out.append((ch.module, ch.lineno))
            visit(ch, in_func)
    visit(tree, False)
    return out


def _import_graph():
    "Directed graph module -> package module it imports (edge attribute `line`)."
    mods = set(_modules())
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for m in mods:
        for name, line in _imports(m):
            parts = name.split(".")
            if parts[0] == PKG and len(parts) > 1 and parts[1] in mods and parts[1] != m:
                g.add_edge(m, parts[1], line=line)
    return g


def test_import_graph_is_read():
    "The reader sees the package's real imports (guards the circle test against reading nothing)."
    g = _import_graph()
    assert g.has_edge("register", "spatial") and g.number_of_edges() > 15


def test_no_import_circle():
    "No chain of imports (top-level or inside functions) leads from a module back to itself."
    g = _import_graph()
    cycles = sorted(nx.simple_cycles(g), key=len)
    shown = [" -> ".join(c + [c[0]]) + "  (" + ", ".join(f"{a}.py:{g.edges[a, b]['line']}" for a, b in
                                                   zip(c, c[1:] + c[:1])) + ")" for c in cycles[:10]]
    assert not cycles, f"{len(cycles)} import circle(s) between {PKG} modules:\n" + "\n".join(shown)


def _runtime_import_names():
    "Top-level import names provided by the runtime dependencies declared in pyproject.toml."
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    norm = lambda s: s.lower().replace("-", "_").replace(".", "_")
    dists = {norm(d.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].split("!")[0].split("~")[0].strip())
             for d in deps}
    names = {imp for imp, ds in packages_distributions().items() if any(norm(d) in dists for d in ds)}
    return names | dists


def test_top_level_imports_are_runtime_dependencies():
    "Outside functions, modules import only the standard library, the package itself and runtime dependencies."
    allowed = _runtime_import_names() | set(sys.stdlib_module_names) | {PKG}
    assert {"numpy", "xarray", "SimpleITK", "dask"} <= allowed
    bad = [f"{m}.py:{line} imports {name}" for m in _modules() for name, line in _imports(m, top_level_only=True)
           if name.split(".")[0] not in allowed]
    assert not bad, ("top-level imports of packages that are not runtime dependencies (import them inside the "
                     "function that needs them, or ask for a dependency):\n" + "\n".join(bad))


@pytest.mark.slow
def test_every_module_imports_in_a_fresh_venv(tmp_path):
    "A fresh venv (no system site-packages) with `pip install -e .` and no extras imports every module."
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", "-e", str(ROOT)], capture_output=True, text=True,
                         timeout=3000, env=env)
    assert res.returncode == 0, f"pip install -e . failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    script = ("import importlib, sys, traceback\nbad = []\n"
              f"for m in {_modules()!r}:\n"
              f"    try: importlib.import_module('{PKG}.' + m if m != '__init__' else '{PKG}')\n"
              "    except Exception: bad.append(m + ': ' + traceback.format_exc(limit=-2))\n"
              "print('\\n'.join(bad)); sys.exit(1 if bad else 0)")
    res = subprocess.run([str(py), "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert res.returncode == 0, f"modules that fail to import with only the runtime dependencies:\n{res.stdout}\n{res.stderr[-3000:]}"
