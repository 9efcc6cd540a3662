"Developer helper: convert jupytext percent-format drafts to nbformat 4.5 notebooks with cell ids (and back)."
import sys, nbformat, jupytext
from pathlib import Path

def py2nb(src, dst):
    nb = jupytext.read(src, fmt="py:percent")
    nb.metadata = {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}
    nb.nbformat, nb.nbformat_minor = 4, 5
    for i, c in enumerate(nb.cells):
        c.metadata = {}
        if "id" not in c: c["id"] = f"c{i:03d}"
        if c.cell_type == "code": c.outputs, c.execution_count = [], None
    nbformat.validator.normalize(nb)
    nbformat.write(nb, dst)

def nb2py(src, dst): jupytext.write(jupytext.read(src), dst, fmt="py:percent")

if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    (py2nb if src.endswith(".py") else nb2py)(src, dst)
