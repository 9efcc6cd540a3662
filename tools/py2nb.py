"Developer helper: convert jupytext percent-format drafts to nbformat 4.5 notebooks with cell ids (and back)."
import os, sys, tempfile, nbformat, jupytext
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
    # write atomically: other people may be exporting the notebooks at the same moment
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dst)), prefix=".tmp_", suffix=".ipynb")
    os.close(fd)
    nbformat.write(nb, tmp)
    os.replace(tmp, dst)

def nb2py(src, dst): jupytext.write(jupytext.read(src), dst, fmt="py:percent")

if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    (py2nb if src.endswith(".py") else nb2py)(src, dst)
