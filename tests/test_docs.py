"""The documentation site, built by the docs command and checked in a real browser (Playwright + Debian chromium).

Builds the whole site with `python tools/build_docs.py` (a development tool, not in the library) into a temporary folder, serves it with `http.server` on
127.0.0.1 (a free port), and visits every page listed in the sidebar. Asserts: the sidebar lists every notebook,
in order; no page is empty or throws a JavaScript error; each module page shows every exported function/class
(from the module's `__all__`) with a heading and its signature; the ipywidgets snapshot in the docs page renders
(its elements exist in the DOM); KaTeX rendered the maths; the sidebar's sections are the index, Reference (the
library's modules), Guides, Tutorials; no heading ending in ' -' and no kernel temp path is shown; and no request leaves localhost (every request is
routed: anything not for the local server is aborted and recorded) and no local request fails.
Skipped only when chromium is absent and CI is not set. Slow: building the site executes every notebook.
To iterate on these checks, point MULTIVIEW_REG_DOCS_SITE at a site built earlier (ignored when CI is set)."""
import functools, importlib, inspect, os, re, shutil, subprocess, sys, threading
from http.server import ThreadingHTTPServer, SimpleHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlparse
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"

def _need_browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {CHROMIUM} is missing (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} not installed (Debian package 'chromium'); CI installs it and runs this test")
    pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency: pip install -e '.[dev]'")


def local_page(p, host:str, viewport:dict, outside:list):
    "Debian's chromium with our flags, and a page on which every request not for `host` is aborted (and its URL recorded in `outside`): (browser, page)."
    def route(r):
        if urlparse(r.request.url).netloc == host: r.continue_()
        else: outside.append(r.request.url); r.abort()
    browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    ctx = browser.new_context(viewport=viewport)
    ctx.route("**/*", route)
    return browser, ctx.new_page()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The site, built by the documented command into a temporary folder."
    _need_browser()
    prebuilt = os.environ.get("MULTIVIEW_REG_DOCS_SITE")  # developers only: check a site built earlier
    if prebuilt and not os.environ.get("CI"):
        return Path(prebuilt)
    dest = tmp_path_factory.mktemp("docs") / "_docs"
    res = subprocess.run([sys.executable, "tools/build_docs.py", "--dest", str(dest)], cwd=ROOT,
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, f"docs build failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    return dest


@pytest.fixture(scope="module")
def server(site):
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown(); srv.server_close()


_PAGE_JS = """() => {
    const main = document.querySelector('main.mvr-content');
    const heads = [...document.querySelectorAll('main h3')].map(h => {
        let n = h.nextElementSibling;
        while (n && !n.querySelector('pre') && !(n.tagName === 'DIV' && n.classList.contains('highlight'))) n = n.nextElementSibling;
        return {id: h.id, text: h.textContent.replace('¶', '').trim(), sig: n ? n.textContent : ''};
    });
    const headings = [...document.querySelectorAll('main h1, main h2, main h3, main h4')]
        .map(h => h.textContent.replace('¶', '').trim());
    return {headings, text: main ? main.innerText : '', cells: document.querySelectorAll('.jp-Cell').length,
            heads, katex: document.querySelectorAll('.katex').length,
            slider: document.querySelectorAll('.jupyter-widgets .widget-slider').length,
            readout: [...document.querySelectorAll('.widget-readout')].map(e => e.textContent.trim()),
            demo: [...document.querySelectorAll('.jupyter-widgets .mvr-widget-demo')].map(e => e.textContent),
            vbox: document.querySelectorAll('.jupyter-widgets.widget-vbox, .widget-vbox').length,
            title: document.title, complete: !!document.querySelector('footer.mvr-footer')};
}"""


@pytest.fixture(scope="module")
def browser_run(site, server):
    "Visit every page once; record what each showed and every request made."
    from playwright.sync_api import sync_playwright, TimeoutError as PlaywrightTimeout
    from build_docs import doc_notebooks, page_path
    host = urlparse(server).netloc
    outside, failed, errors, pages = [], [], [], {}
    with sync_playwright() as p:
        browser, pg = local_page(p, host, {"width": 1280, "height": 900}, outside)
        try:
            pg.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
            pg.on("response", lambda r: r.status >= 400 and failed.append(f"{r.url}: HTTP {r.status}"))
            pg.on("pageerror", lambda e: errors.append(f"{pg.url}: {str(e)[:300]}"))
            pg.goto(server + "index.html", wait_until="networkidle")
            sidebar = pg.eval_on_selector_all("nav.mvr-sidebar li a", "els => els.map(e => e.getAttribute('href'))")
            sections = pg.eval_on_selector_all("nav.mvr-sidebar .mvr-section", "els => els.map(e => e.textContent.trim())")
            for href in sidebar:
                # A page is read again (at most twice) if the browser got less of it than the file holds (no footer,
                # or fewer API headings): a document cut short in transfer must not read as a missing signature.
                want_h3 = len(re.findall(r"<h3\b", (site / href).read_text())) if (site / href).is_file() else 0
                for attempt in range(3):
                    pg.goto(server + href, wait_until="networkidle")
                    if href == "docs.html":  # the widget snapshot: wait until the HTML manager has rendered it
                        try:
                            pg.wait_for_selector(".mvr-widget-demo", timeout=30_000)
                            pg.locator(".mvr-widget-demo").scroll_into_view_if_needed()
                        except PlaywrightTimeout:
                            pass  # reported by the widget check below
                        ARTIFACTS.mkdir(exist_ok=True)
                        pg.screenshot(path=str(ARTIFACTS / "docs_widget_page.png"), full_page=False)
                    pg.evaluate("() => document.fonts.ready.then(() => true)")  # KaTeX's fonts load late: leaving
                    info = pg.evaluate(_PAGE_JS)                                  # earlier aborts them (a failed request)
                    info["loads"] = attempt + 1
                    if info["complete"] and len(info["heads"]) >= want_h3: break
                pages[href] = info
        finally:
            browser.close()
    return dict(sidebar=sidebar, sections=sections, pages=pages, outside=outside, failed=failed, errors=errors,
                expected=[page_path(nb, ROOT / "nbs") for nb in doc_notebooks(ROOT / "nbs")])


def _check_sidebar_lists_every_notebook_in_order(browser_run):
    "Every notebook of nbs/ (and sub-folders), index first, in notebook-number order."
    assert browser_run["sidebar"] == browser_run["expected"]
    assert browser_run["sidebar"][0] == "index.html"


def _check_every_page_renders_with_content(browser_run, site):
    assert set(browser_run["pages"]) == set(browser_run["expected"])
    for href, info in browser_run["pages"].items():
        assert (site / href).is_file()
        assert info["complete"], f"{href}: the browser never got the whole page (no footer in {info['loads']} loads)"
        assert info["cells"] > 0 and len(info["text"].strip()) > 200, f"{href} is (nearly) empty: {info['text'][:200]!r}"
    assert browser_run["errors"] == [], "JavaScript errors on the pages"


def _module_pages():
    "(page, module name, notebook) for every notebook that exports a module."
    from fastcore.nbio import read_nb
    from build_docs import doc_notebooks, page_path
    out = []
    for nb in doc_notebooks(ROOT / "nbs"):
        cells = read_nb(nb).cells
        m = next((re.search(r"^#\|\s*default_exp\s+(\S+)", c.source, re.M) for c in cells
                  if c.cell_type == "code" and "default_exp" in c.source), None)
        if m: out.append((page_path(nb, ROOT / "nbs"), m.group(1), nb.name))
    return out


def _check_api_pages_show_every_exported_function_with_signature(browser_run):
    "For each module, every public function/class in its `__all__` (what nbdev exported) is documented."
    checked = 0
    for href, modname, nbname in _module_pages():
        mod = importlib.import_module(f"multiview_reg.{modname}")
        heads = {h["text"]: h for h in browser_run["pages"][href]["heads"]}
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)): continue
            if getattr(obj, "__module__", mod.__name__) != mod.__name__: continue  # a re-export: documented on its home page
            assert name in heads, f"{href} ({nbname}) has no entry for exported {modname}.{name}; entries: {sorted(heads)}"
            sig = re.sub(r"\s+", " ", heads[name]["sig"])
            assert re.search(rf"\b(def|class)\s+{re.escape(name)}\s*\(", sig), \
                f"{href}: no signature under {name}: {sig[:200]!r}"
            if inspect.isfunction(obj):  # every parameter of the real signature is listed
                for param in inspect.signature(obj).parameters:
                    assert re.search(rf"\b{re.escape(param)}\b", sig), f"{href}: {name} signature lacks {param!r}"
            checked += 1
    assert checked >= 10, f"only {checked} exported functions found: is the package exported?"


def _check_sections(browser_run):
    "Reference (the library's modules) comes first; guides and tutorials are sections of their own."
    secs = browser_run["sections"]
    assert secs[:2] == ["Reference", "Guides"] and "Tutorials" in secs, secs
    from build_docs import navigation
    nav = {s: [p.name for p in ps] for s, ps in navigation(ROOT / "nbs")}
    assert "12_reliability.ipynb" in nav["Guides"] and "13_scale.ipynb" in nav["Guides"]
    assert "00_spatial.ipynb" in nav["Reference"] and "11_docs.ipynb" not in nav["Reference"]


def _check_no_dash_heading_no_kernel_path(browser_run, site):
    "Headings ending in ' -' are hidden, no heading repeats the one right before it, warnings carry no kernel temp path."
    tag = re.compile(r"<[^>]+>")
    for href, info in browser_run["pages"].items():
        hs = info["headings"]
        assert not [h for h in hs if h.endswith(" -")], f"{href}: headings ending in ' -': {[h for h in hs if h.endswith(' -')]}"
        assert not re.search(r"ipykernel_\d+", info["text"]), f"{href}: a kernel temp path is shown"
        if not (site / href).is_file(): continue  # reported by _check_every_page_renders_with_content
        html = (site / href).read_text()
        heads = list(re.finditer(r"<h([1-6])\b[^>]*>(.*?)</h\1>", html, re.S))
        text = lambda m: tag.sub("", m.group(2)).replace("\u00b6", "").strip()
        twice = [text(a) for a, b in zip(heads, heads[1:])
                 if text(a) == text(b) and not tag.sub("", html[a.end():b.start()]).strip()]
        assert not twice, f"{href}: a heading shown twice in a row: {twice}"


def _check_widget_snapshot_renders_offline(browser_run):
    "The ipywidgets example in 11_docs renders from the stored state through the local HTML manager."
    info = browser_run["pages"]["docs.html"]
    assert info["demo"] == ["An offline widget snapshot"]
    assert info["slider"] >= 1 and "7" in info["readout"]
    assert info["vbox"] >= 1


def _check_maths_rendered_by_local_katex(browser_run):
    assert browser_run["pages"]["docs.html"]["katex"] > 0


def _check_no_request_leaves_localhost(browser_run):
    assert browser_run["outside"] == [], f"requests to outside hosts: {browser_run['outside'][:10]}"
    assert browser_run["failed"] == [], f"failed local requests: {browser_run['failed'][:10]}"


@pytest.mark.slow
def test_docs_site_in_browser(browser_run, site):
    """One test, so that the site is built once per run even when pytest-xdist spreads tests over workers;
    every check runs and all failures are reported together."""
    checks = [_check_sidebar_lists_every_notebook_in_order, _check_every_page_renders_with_content,
              _check_api_pages_show_every_exported_function_with_signature, _check_widget_snapshot_renders_offline,
              _check_maths_rendered_by_local_katex, _check_no_request_leaves_localhost, _check_sections,
              _check_no_dash_heading_no_kernel_path]
    failures = []
    for check in checks:
        try:
            check(browser_run, site) if check in (_check_every_page_renders_with_content, _check_no_dash_heading_no_kernel_path) else check(browser_run)
        except AssertionError as e:
            failures.append(f"{check.__name__[7:]}: {str(e)[:2000]}")
    assert not failures, "\n\n".join(failures)


def test_quarto_config_stays_valid():
    "nbdev's Quarto route still works where Quarto exists: its config files parse and name real pages."
    import yaml
    q = yaml.safe_load((ROOT / "nbs" / "_quarto.yml").read_text())
    assert q["project"]["type"] == "website" and "sidebar.yml" in q["metadata-files"]
    sb = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())
    entries = []
    def walk(items):
        for it in items:
            if isinstance(it, str): entries.append(it)
            else: walk(it.get("contents", []))
    walk(sb["website"]["sidebar"]["contents"])
    assert "index.ipynb" in entries
    for e in entries: assert (ROOT / "nbs" / e).exists(), f"sidebar.yml names a missing notebook {e}"
