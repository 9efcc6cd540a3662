"""Build the documentation website offline: execute every notebook, apply nbdev's processing, and render HTML
pages with a sidebar (sections from `nbs/sidebar.yml`), plots and live widget snapshots.

A development tool, not part of the library (it needs nbdev, nbformat, nbclient, nbconvert and jinja2, the `dev`
extra). Explained and exercised in `nbs/11_docs.ipynb`; checked in a real browser by `tests/test_docs.py`.

    python tools/build_docs.py [--dest _docs] [--slow] [--workers 2] [--only NB ...]
    python tools/build_docs.py --write-sidebar      # rewrite nbs/sidebar.yml (Quarto's sidebar) from the navigation
"""
from __future__ import annotations
import argparse, base64, hashlib, json, os, re, shutil, subprocess, sys, tarfile, tempfile, time, warnings
from concurrent.futures import ThreadPoolExecutor
from html import escape
from pathlib import Path
import nbformat
from jinja2 import DictLoader
from traitlets.config import Config
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from fastcore.nbio import read_nb, nb2dict, nb_frontmatter, does_cell_eval, fm_default_eval, md_frontmatter
from fastcore.xtras import str2bool
from nbdev.config import get_config, nbpath2html
from nbdev.process import NBProcessor, Processor
from nbdev.frontmatter import FrontmatterProc
from nbdev.processors import (populate_language, add_show_docs, strip_ansi, hide_line, filter_stream_,
                              rm_header_dash, rm_export, ai_magics, clean_magics, hide_, add_links,
                              strip_hidden_metadata, mv_exports, _is_showdoc)



def _sort_key(p:Path, nbs_path:Path):
    rel = p.relative_to(nbs_path)
    # top-level notebooks first (index before all), then each folder in name order
    return (len(rel.parts) > 1, rel.parts[:-1], p.stem != "index", p.name)

def _exports_module(path:Path) -> bool:
    "True for a notebook that exports a module (it has a `#| default_exp` cell)."
    return any(c.cell_type == "code" and re.search(r"^#\|\s*default_exp\s", _plain(c.source), re.M) for c in read_nb(path).cells)

def _declared_sections(nbs_path:Path):
    "({notebook: section}, [section order]) as declared in `nbs/sidebar.yml` (Quarto's sidebar, one level of sections)."
    p = nbs_path/"sidebar.yml"
    if not p.is_file(): return {}, []
    import yaml
    items = ((yaml.safe_load(p.read_text()) or {}).get("website") or {}).get("sidebar", {}).get("contents", [])
    where, order = {}, []
    for it in items:
        if isinstance(it, str): where[it] = ""
        elif isinstance(it, dict) and "section" in it:
            order.append(str(it["section"]))
            for e in it.get("contents", []): where[e if isinstance(e, str) else e.get("href", "")] = str(it["section"])
    return where, order

def _section(rel:Path, path:Path, declared:dict) -> str:
    "Sidebar section of a page: as declared in sidebar.yml, else '' (index), 'Reference' (a module), 'Guides', or its folder."
    if rel.as_posix() in declared: return declared[rel.as_posix()]
    if len(rel.parts) > 1: return rel.parts[0].lstrip("0123456789_").replace("_", " ").title()
    if rel.stem == "index": return ""
    return "Reference" if _exports_module(path) else "Guides"

def navigation(nbs_path=None, # folder of notebooks; default: nbdev's `nbs_path` of this project
              ) -> list: # [(section, [notebook paths]), ...]; section '' holds the index
    "The site's sections in order (index, then as sidebar.yml lists them, then any new one), notebooks in file-name order."
    nbs_path = Path(nbs_path or get_config().nbs_path).resolve()
    if not nbs_path.is_dir(): raise ValueError(f"nbs_path: expected a folder of notebooks, got {nbs_path}")
    nbs = sorted((p for p in nbs_path.rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(nbs_path).parts)),
                 key=lambda p: _sort_key(p, nbs_path))
    declared, order = _declared_sections(nbs_path)
    groups = {}
    for nb in nbs: groups.setdefault(_section(nb.relative_to(nbs_path), nb, declared), []).append(nb)
    secs = [""] + [s for s in order if s in groups] + [s for s in groups if s not in order and s != ""]
    return [(s, groups[s]) for s in dict.fromkeys(secs) if s in groups]

def doc_notebooks(nbs_path=None, # folder of notebooks; default: nbdev's `nbs_path` of this project
                 ) -> list: # paths of the notebooks to render, in reading order
    "The notebooks that make the site, in reading order: index, then section by section (see `navigation`)."
    return [nb for _, nbs in navigation(nbs_path) for nb in nbs]

def write_sidebar(nbs_path=None, # folder of notebooks
                 ) -> Path: # the sidebar.yml written
    "Rewrite `nbs/sidebar.yml` (Quarto's sidebar) from `navigation`, so that both routes show the same sections."
    nbs_path = Path(nbs_path or get_config().nbs_path).resolve()
    lines = ["website:", "  sidebar:", "    contents:"]
    for sec, nbs in navigation(nbs_path):
        rels = [nb.relative_to(nbs_path).as_posix() for nb in nbs]
        if not sec: lines += [f"      - {r}" for r in rels]; continue
        lines += [f"      - section: {sec}", "        contents:"] + [f"          - {r}" for r in rels]
    out = nbs_path/"sidebar.yml"
    out.write_text("\n".join(lines) + "\n")
    return out

def page_path(nb_path, # a notebook inside `nbs_path`
              nbs_path, # the notebooks' root folder
             ) -> str: # POSIX path of the HTML page relative to the site root, e.g. 'tutorials/stitching.html'
    "Where a notebook's page goes in the site: nbdev's naming (numeric prefix dropped)."
    rel = Path(nb_path).resolve().relative_to(Path(nbs_path).resolve())
    return nbpath2html(rel).as_posix()

VENDOR = {
    "@jupyter-widgets/html-manager": dict(
        version="1.0.15",
        integrity="sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        dest="html-manager",
        # the AMD bundle (ipywidgets base + controls + output) and the icon fonts it references
        files=[r"dist/embed-amd\.js", r"dist/[0-9a-f]+\.(woff2?|ttf|eot|svg)", r"dist/embed\.js\.LICENSE\.txt"]),
    "requirejs": dict(
        version="2.3.8",
        integrity="sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
        dest="requirejs", files=[r"require\.js"]),
    "katex": dict(
        version="0.16.22",
        integrity="sha512-XCHRdUw4lf3SKBaJe4EvgqIuWwkPSo9XoeO8GjQW94Bp7TWv9hNhzZjZ+OH9yf1UmLygb7DIT5GSFQiyt16zYg==",
        dest="katex",
        files=[r"dist/katex\.min\.(js|css)", r"dist/contrib/auto-render\.min\.js", r"dist/fonts/.*\.woff2", r"LICENSE"]),
}

def _cache_dir(cache=None):
    return Path(cache or os.environ.get("MULTIVIEW_REG_DOCS_CACHE") or Path.home()/".cache"/"multiview_reg"/"npm")

def _sri(path):
    "Subresource-integrity string (npm's `integrity`) of a file."
    return "sha512-" + base64.b64encode(hashlib.sha512(Path(path).read_bytes()).digest()).decode()

def npm_tarball(name:str, # npm package name, e.g. 'requirejs'
                version:str, # exact version
                integrity:str, # expected 'sha512-...' of the tarball (npm's dist.integrity)
                cache=None, # cache folder; default $MULTIVIEW_REG_DOCS_CACHE or ~/.cache/multiview_reg/npm
               ) -> Path: # the verified tarball in the cache
    "A package tarball from the npm registry (with `npm pack`), cached, verified against `integrity`."
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(version)):
        raise ValueError(f"version: expected an exact version like '1.2.3' for {name}, got {version!r}")
    cache = _cache_dir(cache); cache.mkdir(parents=True, exist_ok=True)
    tgz = cache/f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tgz.exists():
        npm = shutil.which("npm")
        if npm is None: raise RuntimeError(f"npm is needed once to fetch {name}@{version} into {cache} (not cached yet)")
        with tempfile.TemporaryDirectory(dir=cache) as tmp:  # concurrent builds never see a partial file
            res = subprocess.run([npm, "pack", f"{name}@{version}", "--pack-destination", tmp, "--json",
                                  "--ignore-scripts"], cwd=tmp, capture_output=True, text=True)
            if res.returncode != 0: raise RuntimeError(f"npm pack {name}@{version} failed:\n{res.stderr[-2000:]}")
            got = list(Path(tmp).glob("*.tgz"))
            if len(got) != 1: raise RuntimeError(f"npm pack {name}@{version}: expected one tarball, got {got}")
            os.replace(got[0], tgz)
    if (got := _sri(tgz)) != integrity:
        tgz.unlink()
        raise RuntimeError(f"{name}@{version}: tarball hash {got} differs from the pinned {integrity}; removed it")
    return tgz

def fetch_vendor(dest, # folder to fill, e.g. '_docs/assets/vendor'
                 cache=None, # tarball cache (see `npm_tarball`)
                 vendor:dict=None, # package specs; default `VENDOR`
                ) -> dict: # {package: [files written, relative to dest]}
    "Unpack the pinned JavaScript the pages use (see `VENDOR`) into `dest`."
    dest, out = Path(dest), {}
    for name, spec in (vendor or VENDOR).items():
        tgz = npm_tarball(name, spec["version"], spec["integrity"], cache)
        pats = [re.compile(r"package/" + f) for f in spec["files"]]
        written = []
        with tarfile.open(tgz) as tf:
            for m in tf.getmembers():
                if not (m.isfile() and any(p.fullmatch(m.name) for p in pats)): continue
                rel = Path(spec["dest"])/Path(m.name).relative_to("package")
                (dest/rel).parent.mkdir(parents=True, exist_ok=True)
                (dest/rel).write_bytes(tf.extractfile(m).read())
                written.append(rel.as_posix())
        if not written: raise RuntimeError(f"{name}@{spec['version']}: no file matched {spec['files']}")
        out[name] = sorted(written)
    return out

def _skip_pred(nb, flags):
    "Predicate: cells nbdev-test would not run (same rules: frontmatter skip_exec, eval: false, skip flags)."
    fm = nb_frontmatter(nb)
    if str2bool(fm.get("skip_exec", False)): return lambda cell: True
    dflt = fm_default_eval(fm)
    def evals(cell):
        # once NBProcessor has moved the directives into `directives_` (keys like 'eval:'), read them from there
        d = getattr(cell, "directives_", None) or {}
        v = d.get("eval:", d.get("eval"))
        if v is not None and " ".join(v if isinstance(v, list) else [str(v)]).strip() in ("false", "False"): return False
        return does_cell_eval(cell, dflt)
    return lambda cell: (cell.cell_type != "code" or not evals(cell)
                         or bool(set(flags) & set(getattr(cell, "directives_", {}) or {})))

def _skip_flags(slow:bool, cfg=None):
    "Test flags whose cells are skipped: all of `tst_flags`, unless `slow` (then none)."
    if slow: return []
    flags = (cfg or get_config()).get("tst_flags", "") or ""
    return flags.split() if isinstance(flags, str) else list(flags)

class _SkippingClient(NotebookClient):
    "nbclient that leaves the cells marked `metadata.mvr_skip` unexecuted."
    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.get("metadata", {}).get("mvr_skip"): return cell
        return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

def _plain(v): return "".join(v) if isinstance(v, list) else v

class _execute(Processor):
    "Run the whole notebook in a fresh kernel (nbclient), store outputs and widget state in the nbdev notebook."
    def __init__(self, nb, skip_flags=(), timeout=None, cwd=None):
        super().__init__(nb)
        self.skip_flags, self.timeout, self.cwd = list(skip_flags), timeout, cwd
    def begin(self):
        skip = _skip_pred(self.nb, self.skip_flags)
        cells = [nbformat.v4.new_code_cell("from nbdev.showdoc import show_doc")]
        for c in self.nb.cells:
            if c.cell_type == "code":
                nc = nbformat.v4.new_code_cell(_plain(c.source))
                nc.metadata["mvr_skip"] = bool(skip(c)) and not getattr(c, "has_sd", False)
            else: nc = nbformat.v4.new_markdown_cell("")  # keeps indices aligned; never executed
            cells.append(nc)
        xnb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "python3",
                                                                             "language": "python"}})
        client = _SkippingClient(xnb, timeout=self.timeout, kernel_name="python3", allow_errors=False,
                                 store_widget_state=True, record_timing=False,
                                 resources={"metadata": {"path": str(self.cwd or Path.cwd())}})
        client.execute(stderr=subprocess.DEVNULL)  # the kernel process's own log (a TCP notice), not cell output
        for c, x in zip(self.nb.cells, xnb.cells[1:]):
            if c.cell_type == "code":
                c.outputs, c.execution_count = x.get("outputs", []), x.get("execution_count")
                if x.metadata.get("mvr_skip"): c.mvr_skipped = True
        if "widgets" in xnb.metadata: self.nb.metadata["widgets"] = xnb.metadata["widgets"]

_re_source_link = re.compile(r"\[source\]\(([^)]*)\)\{[^}]*\}")

def _fix_show_doc_md(md:str) -> str:
    "Quarto-only syntax in show_doc markdown -> plain HTML: the floating [source] link."
    return _re_source_link.sub(lambda m: f'<a class="mvr-source" href="{escape(m.group(1).replace("#LNone", ""))}">source</a>', md)

class _quarto_options(Processor):
    "Apply the Quarto cell options nbdev leaves to Quarto (echo, output, include), as nbconvert tags."
    def cell(self, cell):
        if cell.cell_type != "code": return
        d = getattr(cell, "directives_", {}) or {}
        tags = set(cell.metadata.get("tags", []))
        opt = lambda k: str(d.get(k, "")).strip().lower()
        if opt("include") == "false": tags.add("remove_cell")
        if opt("echo") == "false" or "hide_input" in d or getattr(cell, "has_sd", False) or _is_showdoc(cell):
            tags.add("remove_input")
        if opt("output") == "false" or "hide_output" in d: tags.add("remove_output")
        if tags: cell.metadata["tags"] = sorted(tags)
        for o in cell.get("outputs", []):
            md = o.get("data", {}).get("text/markdown")
            if md is not None: o["data"]["text/markdown"] = _fix_show_doc_md(_plain(md))

_re_fence = re.compile(r"^\s*(```|~~~)")
_re_dash_heading = re.compile(r"^ {0,3}#{1,6}\s.*\s-\s*$")

def _rm_dash_headings(cell):
    "Drop every markdown heading line ending in ' -' (nbdev drops a cell only when the heading is all it holds)."
    if cell.cell_type != "markdown" or not cell.source: return
    keep, fenced = [], False
    for line in _plain(cell.source).splitlines(keepends=True):
        if _re_fence.match(line): fenced = not fenced
        if fenced or not _re_dash_heading.match(line): keep.append(line)
    text = "".join(keep).strip("\n")
    if text: cell.source = text
    else: del cell["source"]

# `/tmp/ipykernel_123/456.py:2: UserWarning: text` and the source line Python prints under it
_re_warning_path = re.compile(r"^(?:[A-Za-z]:)?[^\s:]*[/\\][^\n:]*\.py:\d+: (\w+): (.*)\n(?:[ \t]+\S.*\n)?", re.M)

def _clean_warnings(cell):
    "Warnings on stderr without the file path and line (kernel temp files, site-packages): `UserWarning: text`."
    if cell.cell_type != "code": return
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == "stderr":
            o["text"] = _re_warning_path.sub(r"\1: \2\n", _plain(o.get("text", "")))

def process_notebook(path, # notebook to process
                     slow:bool=False, # also run the cells flagged with a test flag (e.g. `slow`)
                     timeout:int=None, # seconds per cell; default nbdev's `cell_timeout` config (None: no limit)
                     execute:bool=True, # run the notebook (False: only nbdev's processing, no outputs)
                    ):
    "Execute `path` and apply nbdev's docs processing; returns the processed notebook (with `.frontmatter_`)."
    path = Path(path)
    if not path.is_file() or path.suffix != ".ipynb": raise ValueError(f"path: expected an .ipynb file, got {path}")
    cfg = get_config()
    if timeout is None: timeout = int(cfg.get("cell_timeout", 0) or 0) or None
    nb = read_nb(path)
    procs = [FrontmatterProc, populate_language, add_show_docs]
    if execute: procs.append(_execute(nb, _skip_flags(slow, cfg), timeout, cwd=path.parent))
    procs += [strip_ansi, _clean_warnings, hide_line, filter_stream_, rm_header_dash, _rm_dash_headings, _quarto_options, rm_export, ai_magics,
              clean_magics, hide_, add_links, mv_exports, strip_hidden_metadata]
    proc = NBProcessor(nb=nb, procs=procs, rm_directives=True)
    proc.process()
    nb = proc.nb
    # FrontmatterProc leaves the frontmatter as a leading raw cell for Quarto; the page header shows it instead
    nb.cells = [c for c in nb.cells if not (c.cell_type == "raw" and _plain(c.source).lstrip().startswith("---"))]
    return nb

PAGE_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}
{#- KaTeX first: once require.js defines `define.amd`, KaTeX's UMD bundle would register as an anonymous AMD module -#}
<link rel="stylesheet" href="{{ resources.mvr.root }}assets/vendor/katex/dist/katex.min.css">
<script src="{{ resources.mvr.root }}assets/vendor/katex/dist/katex.min.js"></script>
<script src="{{ resources.mvr.root }}assets/vendor/katex/dist/contrib/auto-render.min.js"></script>
<script>
document.addEventListener("DOMContentLoaded", function () {
  if (!window.renderMathInElement) return;
  document.querySelectorAll(".jp-MarkdownOutput").forEach(function (el) {
    renderMathInElement(el, {delimiters: [
      {left: "$$", right: "$$", display: true}, {left: "\\[", right: "\\]", display: true},
      {left: "$", right: "$", display: false}, {left: "\\(", right: "\\)", display: false}],
      throwOnError: false, ignoredTags: ["script", "noscript", "style", "textarea", "pre", "code"]});
  });
});
</script>
<script src="{{ resources.require_js_url }}"></script>
{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_css -%}
<link rel="stylesheet" href="{{ resources.mvr.root }}assets/site.css">
{%- endblock html_head_css -%}
{%- block body_header -%}
<body class="jp-Notebook mvr-page" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<nav class="mvr-sidebar" aria-label="Pages">
  <a class="mvr-brand" href="{{ resources.mvr.root }}index.html">{{ resources.mvr.site_title | e }}</a>
  {%- for section, pages in resources.mvr.sidebar %}
  {%- if section %}<div class="mvr-section">{{ section | e }}</div>{% endif %}
  <ul>
  {%- for p in pages %}
    <li><a href="{{ resources.mvr.root }}{{ p.href }}"{% if p.href == resources.mvr.page %} aria-current="page" class="mvr-current"{% endif %}>{{ p.title | e }}</a></li>
  {%- endfor %}
  </ul>
  {%- endfor %}
</nav>
<main class="mvr-content">
<header class="mvr-title">
  <h1 id="mvr-page-title">{{ resources.mvr.title | e }}</h1>
  {%- if resources.mvr.description %}<p class="mvr-lede">{{ resources.mvr.description | e }}</p>{% endif %}
</header>
{%- endblock body_header -%}
{% block body_footer %}
<footer class="mvr-footer">Generated from <code>{{ resources.mvr.source | e }}</code> by <code>python tools/build_docs.py</code>.</footer>
</main>
</body>
{% endblock body_footer %}
"""

SITE_CSS = """
body.mvr-page { margin: 0; padding: 0; }
.mvr-sidebar { position: fixed; top: 0; left: 0; bottom: 0; width: 15rem; overflow-y: auto; padding: 1rem;
  box-sizing: border-box; background: #f6f7f9; border-right: 1px solid #dde1e6; font-family: var(--jp-ui-font-family); }
.mvr-sidebar ul { list-style: none; margin: 0 0 1rem 0; padding: 0; }
.mvr-sidebar li a { display: block; padding: .2rem .4rem; border-radius: 4px; color: #1f2937; text-decoration: none; }
.mvr-sidebar li a:hover { background: #e5e9f0; }
.mvr-sidebar a.mvr-current { background: #dbe7ff; font-weight: 600; }
.mvr-brand { display: block; font-size: 1.2rem; font-weight: 700; margin-bottom: 1rem; color: #111; text-decoration: none; }
.mvr-section { text-transform: uppercase; font-size: .75rem; letter-spacing: .05em; color: #6b7280; margin: .5rem 0 .25rem; }
.mvr-content { margin-left: 15rem; padding: 1rem 2rem 3rem 2rem; max-width: 64rem; }
.mvr-title, .mvr-footer { font-family: var(--jp-content-font-family); }
.mvr-title h1 { margin-bottom: .25rem; }
.mvr-lede { font-size: 1.15rem; color: #4b5563; margin-top: 0; }
.mvr-footer { margin-top: 3rem; color: #6b7280; font-size: .8rem; }
a.mvr-source { float: right; font-size: smaller; }
.jp-RenderedMarkdown hr { margin: 1.5rem 0 .5rem; }
@media (max-width: 50rem) { .mvr-sidebar { position: static; width: auto; } .mvr-content { margin-left: 0; } }
"""

_re_external = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)

def _rel_root(page:str) -> str:
    "Relative path from a page to the site root: '' or '../' per folder level."
    return "../" * page.count("/")

def _nb_title(path:Path):
    "Title and description from a notebook's frontmatter or first `# Title` / `> lede` markdown cell."
    nb = read_nb(path)
    fm = dict(nb_frontmatter(nb))
    if "title" not in fm:
        md = next((c for c in nb.cells if c.cell_type == "markdown"), None)
        if md is not None: fm.update(md_frontmatter(_plain(md.source)) or {})
    return fm.get("title") or path.stem, fm.get("description", "")

def tag_remove_config() -> Config:
    "nbconvert config that applies the tags `_quarto_options` sets (remove_cell, remove_input, remove_output)."
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_cell_tags = {"remove_cell"}
    c.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    c.TagRemovePreprocessor.remove_all_outputs_tags = {"remove_output"}
    return c

def notebook_node(nb, # processed notebook (from `process_notebook`)
                 ) -> nbformat.NotebookNode: # a plain nbformat notebook for nbconvert's exporters
    "A processed notebook as an nbformat node (nbdev's bookkeeping fields dropped, text joined)."
    fm = getattr(nb, "frontmatter_", {}) or {}
    d = nb2dict(nb)
    d.setdefault("metadata", {})["language_info"] = {"name": "python"}
    d["metadata"]["title"] = fm.get("title", "")
    for c in d["cells"]:
        for k in ("idx_", "directives_", "_directives_", "_meta_names_", "has_sd", "mvr_skipped"): c.pop(k, None)
        c["source"] = _plain(c.get("source", ""))
        for o in c.get("outputs", []):
            if "text" in o: o["text"] = _plain(o["text"])
            for k, v in o.get("data", {}).items():
                if isinstance(v, list): o["data"][k] = _plain(v)
    return nbformat.from_dict(d)

_re_heading = re.compile(r"<h([1-6])\b[^>]*>(.*?)</h\1>", re.S)

def _heading_text(inner:str) -> str: return re.sub(r"<[^>]+>", "", inner).replace("¶", "").strip()

def _drop_repeated_headings(html:str) -> str:
    "Drop a notebook heading that repeats the heading right before or after it (nothing but tags between), e.g. a `## demo` section over the `demo` API entry, or an `## X` under the page title X."
    hs = list(_re_heading.finditer(html))
    drop = []
    for a, b in zip(hs, hs[1:]):
        if _heading_text(a.group(2)) != _heading_text(b.group(2)) or re.sub(r"<[^>]+>", "", html[a.end():b.start()]).strip(): continue
        for h in (a, b):  # the one written in a markdown cell goes; the page title and API entries stay
            cell = html.rfind('<div class="jp-Cell ', 0, h.start())
            if cell >= 0 and "jp-MarkdownCell" in html[cell:cell + 200] and html.rfind("jp-OutputArea", cell, h.start()) < 0:
                drop.append(h); break
    for h in sorted(set(drop), key=lambda m: -m.start()): html = html[:h.start()] + html[h.end():]
    return html

def render_page(nb, # processed notebook (from `process_notebook`)
                page:str, # its path in the site, e.g. 'spatial.html'
                sidebar:list, # [(section, [{'href', 'title'}, ...]), ...] with hrefs relative to the site root
                site_title:str="", # shown on top of the sidebar
                source:str="", # the notebook's path, for the footer
               ) -> str: # the HTML page
    "Render a processed notebook as one HTML page of the site (local scripts only)."
    root = _rel_root(page)
    fm = getattr(nb, "frontmatter_", {}) or {}
    node = notebook_node(nb)
    node.metadata["title"] = fm.get("title") or Path(page).stem
    c = tag_remove_config()
    exp = HTMLExporter(config=c, template_name="lab", template_file="mvr_page.html.j2",
                       extra_loaders=[DictLoader({"mvr_page.html.j2": PAGE_TEMPLATE})],
                       exclude_input_prompt=True, exclude_output_prompt=True,
                       require_js_url=root + "assets/vendor/requirejs/require.js",
                       widget_renderer_url=root + "assets/vendor/html-manager/dist/embed-amd.js",
                       mathjax_url="", mermaid_js_url="", mermaid_layout_elk_js_url="", jquery_url="")
    resources = {"mvr": dict(root=root, page=page, sidebar=sidebar, site_title=site_title,
                              title=fm.get("title", Path(page).stem), description=fm.get("description", ""),
                              source=source)}
    html, _ = exp.from_notebook_node(node, resources=resources)
    html = _drop_repeated_headings(html)
    cfg = get_config()
    if cfg.get("doc_host"):  # nbdev's cross-reference links point at the published site: make them relative
        html = html.replace(f'href="{cfg.doc_host.rstrip("/")}{cfg.get("doc_baseurl", "").rstrip("/")}/', f'href="{root}')
    if (m := _re_external.search(html)):
        raise RuntimeError(f"{page}: the page would load a resource from outside the site: {html[m.start():m.end()+80]!r}")
    return html

def site_sidebar(nbs_path=None, # folder of notebooks (default: the project's)
                ) -> list: # [(section, [{'href', 'title', 'source'}, ...]), ...]
    "The navigation with page links and titles: index, 'Reference' (the modules), 'Guides', 'Tutorials', ..."
    nbs_path = Path(nbs_path or get_config().nbs_path).resolve()
    out = []
    for sec, nbs in navigation(nbs_path):
        pages = []
        for nb in nbs:
            title, _ = _nb_title(nb)
            pages.append(dict(href=page_path(nb, nbs_path), title=title, source=nb.relative_to(nbs_path).as_posix()))
        out.append((sec, pages))
    return out

_ansi = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

def _build_one(nb_path, nbs_path, dest, sidebar, site_title, slow, timeout):
    page = page_path(nb_path, nbs_path)
    t0 = time.time()
    nb = process_notebook(nb_path, slow=slow, timeout=timeout)
    html = render_page(nb, page, sidebar, site_title=site_title,
                       source=(Path("nbs")/Path(nb_path).relative_to(nbs_path)).as_posix())
    out = Path(dest)/page
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return page, time.time() - t0

def build_docs(dest=None, # output folder; default nbdev's `doc_path` (`_docs`)
               nbs_path=None, # folder of notebooks; default nbdev's `nbs_path`
               slow:bool=False, # also run cells flagged `slow` (and any other test flag)
               n_workers:int=2, # notebooks executed at once
               only:list=None, # rebuild only these notebooks (file names or stems); default all
               timeout:int=None, # seconds per cell; default nbdev's `cell_timeout`
               cache=None, # npm tarball cache (see `npm_tarball`)
               verbose:bool=True, # print one line per page
              ) -> list: # pages written, relative to dest
    "Build the documentation site: execute and render every notebook, copy the local scripts and the stylesheet."
    cfg = get_config()
    nbs_path = Path(nbs_path or cfg.nbs_path).resolve()
    dest = Path(dest or cfg.doc_path).resolve()
    if int(n_workers) < 1: raise ValueError(f"n_workers: expected an integer >= 1, got {n_workers}")
    nbs = doc_notebooks(nbs_path)
    if only:
        want = {Path(o).stem for o in only}
        unknown = want - {p.stem for p in nbs}
        if unknown: raise ValueError(f"only: no notebook named {sorted(unknown)} in {nbs_path}")
        nbs = [p for p in nbs if p.stem in want]
    sidebar = site_sidebar(nbs_path)
    dest.mkdir(parents=True, exist_ok=True)
    fetch_vendor(dest/"assets"/"vendor", cache=cache)
    (dest/"assets"/"site.css").write_text(SITE_CSS)
    (dest/".nojekyll").touch()
    site_title = cfg.get("title", "") or cfg.get("lib_name", "")
    done, failed = [], {}
    def run(nb):
        try: return nb, _build_one(nb, nbs_path, dest, sidebar, site_title, slow, timeout), None
        except Exception as e: return nb, None, e
    with ThreadPoolExecutor(max_workers=int(n_workers)) as pool:
        for nb, res, err in pool.map(run, nbs):
            rel = nb.relative_to(nbs_path).as_posix()
            if err is not None:
                failed[rel] = err
                if verbose: print(f"FAILED {rel}: {type(err).__name__}: {_ansi.sub('', str(err))[-3000:]}",
                                  file=sys.stderr, flush=True)
            else:
                done.append(res[0])
                if verbose: print(f"{rel} -> {dest.name}/{res[0]} ({res[1]:.1f} s)", flush=True)
    if failed: raise RuntimeError(f"docs: {len(failed)} notebook(s) failed: {', '.join(failed)}")
    return done

def main(argv=None):
    "Command line: `python tools/build_docs.py [--dest _docs] [--slow] [--workers 2] [--only NB ...]`."
    ap = argparse.ArgumentParser(prog="python tools/build_docs.py", description=
        "Build the documentation site offline: execute every notebook in nbs/ and render it to HTML.")
    ap.add_argument("--dest", default=None, help="output folder (default: nbdev's doc_path, _docs)")
    ap.add_argument("--nbs", default=None, help="notebook folder (default: nbdev's nbs_path)")
    ap.add_argument("--slow", action="store_true", help="also run the cells flagged `slow`")
    ap.add_argument("--workers", type=int, default=2, help="notebooks executed at once (default 2)")
    ap.add_argument("--only", nargs="*", default=None, help="rebuild only these notebooks (file names or stems)")
    ap.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: nbdev's cell_timeout)")
    ap.add_argument("--write-sidebar", action="store_true", help="only rewrite nbs/sidebar.yml from the navigation")
    a = ap.parse_args(argv)
    if a.write_sidebar:
        print(write_sidebar(a.nbs))
        return 0
    t0 = time.time()
    try: pages = build_docs(a.dest, a.nbs, slow=a.slow, n_workers=a.workers, only=a.only, timeout=a.timeout)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{len(pages)} page(s) in {time.time() - t0:.0f} s")
    return 0

if __name__ == "__main__": sys.exit(main())
