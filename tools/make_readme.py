"""Write README.md from nbs/index.ipynb without Quarto: run the notebook, apply nbdev's processing
(directives and hidden cells removed), and convert to Markdown with nbconvert; figures go to images/."""
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter
from nbdev.process import NBProcessor
from nbdev.processors import clean_magics, rm_header_dash
from execnb.shell import CaptureShell
from fastcore.nbio import read_nb, nb2dict

ROOT = Path(__file__).resolve().parents[1]


def make_readme(src=ROOT / "nbs" / "index.ipynb", dst=ROOT / "README.md"):
    nb = read_nb(src)
    shell = CaptureShell(src)
    import os
    cwd = os.getcwd(); os.chdir(src.parent)
    try: shell.run_all(nb, exc_stop=True)
    finally: os.chdir(cwd)
    proc = NBProcessor(nb=nb, procs=[clean_magics, rm_header_dash])
    proc.process()
    nb = proc.nb
    # drop cells hidden with #| hide, and the directive comments
    keep = []
    for c in nb.cells:
        src_lines = c.source.splitlines()
        if any(l.strip().startswith("#| hide") for l in src_lines): continue
        c.source = "\n".join(l for l in src_lines if not l.strip().startswith("#|"))
        keep.append(c)
    nb.cells = keep
    d = nb2dict(nb)
    d.setdefault("metadata", {})["language_info"] = {"name": "python"}
    for c in d["cells"]:
        c["metadata"] = {}
        c.pop("idx_", None)
        if isinstance(c.get("source"), list): c["source"] = "".join(c["source"])
        for o in c.get("outputs", []):
            for k, v in o.get("data", {}).items():
                if isinstance(v, list): o["data"][k] = "".join(v)
            if isinstance(o.get("text"), list): o["text"] = "".join(o["text"])
    body, res = MarkdownExporter().from_notebook_node(nbformat.from_dict(d))
    imgdir = ROOT / "images"; imgdir.mkdir(exist_ok=True)
    for name, data in res.get("outputs", {}).items():
        (imgdir / Path(name).name).write_bytes(data)
        body = body.replace(name, f"images/{Path(name).name}")
    header = "<!-- WARNING: generated from nbs/index.ipynb by tools/make_readme.py; edit the notebook. -->\n\n"
    dst.write_text(header + body)
    return dst


if __name__ == "__main__":
    print(make_readme())
