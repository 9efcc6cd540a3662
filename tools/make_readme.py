"""Write README.md from nbs/index.ipynb without Quarto, with the same processing as the docs site
(`tools/build_docs.py`, `process_notebook`: executed in a fresh kernel, nbdev's processors, hidden cells and
directives removed, `echo`/`output` options honoured), converted to Markdown by nbconvert; figures go to images/."""
from pathlib import Path
from nbconvert import MarkdownExporter
from build_docs import process_notebook, notebook_node, tag_remove_config  # tools/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]


def make_readme(src=ROOT / "nbs" / "index.ipynb", dst=ROOT / "README.md", slow=False):
    nb = process_notebook(Path(src), slow=slow)
    fm = nb.frontmatter_
    body, res = MarkdownExporter(config=tag_remove_config()).from_notebook_node(notebook_node(nb))
    imgdir = ROOT / "images"; imgdir.mkdir(exist_ok=True)
    for name, data in res.get("outputs", {}).items():
        (imgdir / Path(name).name).write_bytes(data)
        body = body.replace(f"]({name})", f"](images/{Path(name).name})")
    title = f"# {fm.get('title', 'multiview_reg')}\n\n" + (f"> {fm['description']}\n\n" if fm.get("description") else "")
    header = "<!-- WARNING: generated from nbs/index.ipynb by tools/make_readme.py; edit the notebook. -->\n\n"
    Path(dst).write_text(header + title + body.lstrip())
    return dst


if __name__ == "__main__":
    print(make_readme())
