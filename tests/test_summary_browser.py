"""The registration summary widget in a real JupyterLab, driven by a real browser (Playwright + Debian chromium).

Starts `jupyter lab` on 127.0.0.1 (a free port, a random token, a temporary root folder holding
`tests/assets/summary_browser.ipynb`, temporary Jupyter config/data/runtime folders), opens the notebook in
chromium, runs all cells, and checks that the `RegistrationSummary` widget renders with its three tabs; then
selects another edge in the Pairs tab and asserts that the overlay image (its pixels, read back through a canvas)
and the edge's numbers changed; toggles the Graph tab to 'after' and asserts that the graph picture changed.
Screenshots go to test-artifacts/summary*.png. Requests that leave 127.0.0.1 are aborted and reported.
Skipped only when chromium is absent and CI is not set. The server, its kernels and the browser are cleaned up
in all cases."""
import json, os, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
from urllib.parse import urlparse
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "tests" / "assets" / "summary_browser.ipynb"
from test_docs import ARTIFACTS, local_page, _need_browser as _need_chromium  # one browser setup (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.slow  # JupyterLab start + kernel + registration: ~1 min on 2 cores


def _need_browser():
    _need_chromium()
    if shutil.which("jupyter") is None and not (Path(sys.executable).parent / "jupyter").exists():
        pytest.fail("jupyterlab is a dev dependency but `jupyter` is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on 127.0.0.1 serving a temporary folder with the test notebook; stopped afterwards."
    _need_browser()
    root, home = tmp_path / "root", tmp_path / "jupyter"
    root.mkdir(); home.mkdir()
    shutil.copy(ASSET, root / "summary.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"),
               JUPYTER_PLATFORM_DIRS="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    env.pop("JUPYTER_TOKEN", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # the kernel imports this checkout, installed or not
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
           "--ServerApp.allow_remote_access=False", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabApp.workspaces_dir={home / 'workspaces'}", "--ServerApp.shutdown_no_activity_timeout=0", "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0: cmd.append("--allow-root")  # containers and CI run as root
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}")
            try:
                if _get(f"{base}/api/status?token={token}")[0] == 200: break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer within 120 s:\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield dict(base=base, token=token, log=tmp_path / "jupyter.log")
    finally:
        try:  # shut the kernels down through the API (they run in their own sessions), then the server
            _, body = _get(f"{base}/api/kernels?token={token}")
            for k in json.loads(body):
                req = urllib.request.Request(f"{base}/api/kernels/{k['id']}?token={token}", method="DELETE")
                urllib.request.urlopen(req, timeout=10).close()
        except Exception:
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try: proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL); proc.wait(timeout=10)
        log.close()


_PIXELS = """(sel) => new Promise((resolve) => {
    const img = document.querySelector(sel);
    if (!img || !img.complete || !img.naturalWidth) { resolve(null); return; }
    img.decode().then(() => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let h = 0, s = 0;
    for (let i = 0; i < d.length; i += 1) { h = (h * 31 + d[i]) >>> 0; s += d[i]; }
    resolve({w: c.width, h: c.height, hash: h, sum: s, src: img.src});
    }).catch(() => resolve(null));
})"""

def _pixels_after_change(pg, sel, old_hash, timeout=60.0):
    "Poll until the image shows other pixels than `old_hash` (decoded, not blank); its pixel summary, or the last one."
    deadline, p = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        p = pg.evaluate(_PIXELS, sel)  # (evaluate awaits the promise; wait_for_function would not)
        if p is not None and p["sum"] > 0 and p["hash"] != old_hash: return p
        time.sleep(0.2)
    return p


def _wait_pixels(pg, sel, timeout=30.0):
    "The pixel summary of an image once it is loaded and decoded."
    return _pixels_after_change(pg, sel, None, timeout)


def test_summary_widget_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright, TimeoutError as PlaywrightTimeout
    base, token = lab["base"], lab["token"]
    host = urlparse(base).netloc
    outside, errors = [], []
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser, pg = local_page(p, host, {"width": 1400, "height": 1000}, outside)
        try:
            pg.on("pageerror", lambda e: errors.append(str(e)[:300]))
            pg.goto(f"{base}/lab/tree/summary.ipynb?token={token}", wait_until="domcontentloaded")
            pg.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            # JupyterLab may ask which kernel to use (the notebook names python3): accept the proposed one
            try:
                pg.wait_for_selector(".jp-Dialog", timeout=20_000)
                pg.locator(".jp-Dialog .jp-mod-accept").click()
            except PlaywrightTimeout:
                pass
            # the kernel must be ready before running: the status bar says Idle
            pg.wait_for_function("() => /\\|\\s*Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText || '')",
                                 timeout=120_000)
            for b in pg.locator(".jp-Notification-Toast-Close, .jp-toast-button:has-text('No')").all():
                try: b.click(timeout=2_000)  # the "Jupyter news?" toast would cover the widget in screenshots
                except PlaywrightTimeout: pass
            # Run > Run All Cells, through the menu as a person would
            pg.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            pg.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            summary = pg.locator(".mvr-registration-summary")
            try:
                summary.wait_for(state="visible", timeout=180_000)
            except PlaywrightTimeout:
                pg.screenshot(path=str(ARTIFACTS / "summary_failed.png"))
                err = pg.locator("[data-mime-type='application/vnd.jupyter.stderr'], .jp-RenderedText[data-mime-type*='error']")
                raise AssertionError("the summary widget did not render; outputs: "
                                     + " | ".join(err.all_inner_texts())[:3000]
                                     + f"\nserver log:\n{lab['log'].read_text()[-2000:]}")
            line = pg.locator(".mvr-summary-line").inner_text()
            assert line.startswith("9 views") and "edges registered" in line, line
            tabs = summary.get_by_role("tab")
            assert [t.strip() for t in tabs.all_inner_texts()] == ["Graph", "Pairs", "Views"]

            # Graph tab: before/after toggle changes the picture
            g_before = _wait_pixels(pg, ".mvr-graph-image")
            assert g_before is not None and g_before["w"] > 100, "the graph picture did not load"
            summary.locator(".widget-toggle-buttons button", has_text="after").click()
            g_after = _pixels_after_change(pg, ".mvr-graph-image", g_before["hash"])
            assert g_after["hash"] != g_before["hash"], "the before/after toggle did not change the graph picture"
            assert _pixels_after_change(pg, ".mvr-graph-image", g_after["hash"], timeout=2.0)["hash"] == g_after["hash"]
            summary.scroll_into_view_if_needed()
            pg.screenshot(path=str(ARTIFACTS / "summary_graph.png"))

            # Pairs tab: another edge -> another overlay and other numbers
            summary.get_by_role("tab", name="Pairs").click()
            select = pg.locator(".mvr-edge-select select")
            select.wait_for(state="visible", timeout=30_000)
            before = _wait_pixels(pg, ".mvr-pair-overlay")
            info0 = pg.locator(".mvr-pair-info").inner_text()
            assert "edge 0 – 1" in info0, info0
            assert before["w"] > 100 and before["h"] > 100 and before["sum"] > 0
            select.select_option(label="4 – 5")
            pg.wait_for_function("() => document.querySelector('.mvr-pair-info').innerText.includes('edge 4 – 5')",
                                 timeout=60_000)
            after = _pixels_after_change(pg, ".mvr-pair-overlay", before["hash"])
            assert after["hash"] != before["hash"], "selecting another edge did not change the overlay"
            info1 = pg.locator(".mvr-pair-info").inner_text()
            assert info1 != info0 and "quality" in info1 and "residual" in info1 and "used by the resolver: yes" in info1
            # the dropped link of the empty tile says so
            select.select_option(label="7 – 8 (dropped)")
            pg.wait_for_function("() => document.querySelector('.mvr-pair-info').innerText.includes('edge 7 – 8')",
                                 timeout=60_000)
            assert "used by the resolver: no" in pg.locator(".mvr-pair-info").inner_text()
            p78 = _pixels_after_change(pg, ".mvr-pair-overlay", after["hash"])
            assert p78["hash"] != after["hash"]
            select.select_option(label="4 – 5")
            back = _pixels_after_change(pg, ".mvr-pair-overlay", p78["hash"])
            assert back["hash"] == after["hash"], "edge 4 – 5 again should show the same overlay"
            summary.scroll_into_view_if_needed()
            pg.screenshot(path=str(ARTIFACTS / "summary.png"))

            # Views tab: a table with one row per view
            summary.get_by_role("tab", name="Views").click()
            rows = pg.locator(".mvr-view-table table tbody tr")
            rows.first.wait_for(state="visible", timeout=30_000)
            assert rows.count() == 9
        finally:
            browser.close()
    assert outside == [], f"requests left 127.0.0.1: {outside[:5]}"
    assert errors == [], f"JavaScript errors: {errors[:5]}"
