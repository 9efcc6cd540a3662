"Run every notebook under pytest with nbdev's semantics (the notebooks are the source, their cells are tests)."
from pathlib import Path
import pytest
from nbdev.test import test_nb as _run_notebook  # renamed so that pytest does not collect it

from conftest import run_slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").rglob("*.ipynb")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(ROOT / "nbs").parts))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[str(p.relative_to(ROOT / "nbs")) for p in NOTEBOOKS])
def test_notebook(nb, request):
    "Each notebook runs top to bottom; cells flagged `#| slow` run only in CI or with --slow."
    skip = [] if run_slow(request.config) else ["slow"]
    ok, _ = _run_notebook(nb, skip_flags=skip, force_flags=[], basepath=str(ROOT), cell_timeout=1800)
    assert ok, f"notebook {nb.name} failed (see the traceback above)"
