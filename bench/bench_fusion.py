"""fuse() against multiview-stitcher's fusion.fuse on the same generated tile scans, in one run.

Run by hand:  python bench/bench_fusion.py [--out bench/RESULTS_fusion.md] [--only NAME ...]

Each (tool, case) run is a fresh subprocess (imports, caches and memory do not leak between runs). Inside it the
views are generated (tiled_dataset, true transforms set under 'truth'), then the fusion is timed, wall and CPU,
while a thread samples the process RSS every 20 ms (peak above the RSS right before the call = the fusion's own
memory). Both tools fuse onto the same output grid (`fusion_grid(views, 'truth')`), order 1, border blending
(ours: cosine ramps over 10 output pixels; the peer: its default blending widths), the threaded dask scheduler,
the whole result computed into memory. The two results are compared by NCC away from the outer border.

The large case: a 7x7 grid of 256x2048x2048 uint16 tiles (procedural_dataset, lazily generated, 98 GiB, > 4x
this machine's 24 GiB) fused at 16x coarser spacing (pyramid level 4) and streamed to OME-Zarr with
write_ome_zarr(max_memory='2GB'), once with threads and once on a 2-worker LocalCluster (2 GB per worker).
The peer is tried on the same case with its own zarr streaming (`output_zarr_url`), time-limited.
"""
import argparse, json, os, subprocess, sys, threading, time
from pathlib import Path

CASES = {
    "2d_8x8_512": dict(ndim=2, grid=(8, 8), tile_shape=(512, 512), seed=0),
    "3d_3x3_64x256x256": dict(ndim=3, grid=(1, 3, 3), tile_shape=(64, 256, 256), spacing=(2, .5, .5), seed=0),
}
LARGE = dict(grid=(7, 7), tile_shape=(256, 2048, 2048), n_levels=5, seed=0)
LARGE_SPACING = (8.0, 16.0, 16.0)  # pyramid level 4 of the 1-unit input (z stops halving at 32 px)
PEER_TIMEOUT = 900


def _rss_sampler(proc, stop, box, children=False):
    while not stop.is_set():
        rss = proc.memory_info().rss
        if children:
            rss = max([rss] + [c.memory_info().rss for c in proc.children(recursive=True) if c.is_running()])
        box[0] = max(box[0], rss)
        time.sleep(0.02)


def _measure(fn):
    import psutil
    proc = psutil.Process()
    base = proc.memory_info().rss
    box, stop = [base], threading.Event()
    th = threading.Thread(target=_rss_sampler, args=(proc, stop, box), daemon=True); th.start()
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stop.set(); th.join()
    return out, {"wall": wall, "cpu": cpu, "base_mb": base / 1e6, "peak_mb": box[0] / 1e6}


def run_small(tool, name):
    import numpy as np, warnings, dask
    warnings.simplefilter("ignore")
    from multiview_reg.data import tiled_dataset
    from multiview_reg.spatial import set_affine
    from multiview_reg.fusion import fuse, fusion_grid
    views, truth = tiled_dataset(**CASES[name])
    for v, a in zip(views, truth): set_affine(v, a, "truth")
    grid = fusion_grid(views, "truth")
    if tool == "peer":
        from multiview_stitcher import fusion as mvf
        def go():
            f = mvf.fuse(views, transform_key="truth", output_stack_properties=grid, interpolation_order=1)
            return np.asarray(f.data.compute(scheduler="threads")).squeeze()
    else:
        def go(): return fuse(views, "truth", origin=grid["origin"], shape=grid["shape"], order=1).data.compute(scheduler="threads")
    img, m = _measure(go)
    out = Path(os.environ.get("BENCH_TMP", "/tmp")) / f"bench_fusion_{tool}_{name}.npy"
    np.save(out, img)
    return {**m, "shape": list(img.shape), "npy": str(out)}


def run_large(tool, cluster=False):
    import numpy as np, warnings, shutil, dask
    warnings.simplefilter("ignore")
    from multiview_reg.data import procedural_dataset
    from multiview_reg.fusion import fuse, write_ome_zarr
    views, truth = procedural_dataset(**LARGE)
    out = Path(os.environ.get("BENCH_TMP", "/tmp")) / f"bench_fusion_large_{tool}{'_cluster' if cluster else ''}.ome.zarr"
    shutil.rmtree(out, ignore_errors=True)
    client = None
    if cluster:
        from distributed import Client, LocalCluster
        client = Client(LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="2GB", processes=True, dashboard_address=None))
    if tool == "peer":
        from multiview_stitcher import fusion as mvf
        from multiview_reg.fusion import fusion_grid
        grid = fusion_grid(views, "stage", spacing=LARGE_SPACING)
        def go():
            with dask.config.set(scheduler="threads"):
                mvf.fuse(views, transform_key="stage", output_stack_properties=grid, interpolation_order=1,
                         output_zarr_url=str(out), zarr_options={"ome_zarr": True})
            return out
    else:
        def go():
            f = fuse(views, "stage", spacing=LARGE_SPACING, order=1)
            return write_ome_zarr(f, out, max_memory="2GB", progress=False)
    virt = sum(np.prod(LARGE["tile_shape"]) * 2 for _ in views) / 2**30
    import psutil
    proc = psutil.Process()
    base = proc.memory_info().rss
    box, stop = [base], threading.Event()
    th = threading.Thread(target=_rss_sampler, args=(proc, stop, box, cluster), daemon=True); th.start()
    t0 = time.perf_counter()
    go()
    wall = time.perf_counter() - t0
    stop.set(); th.join()
    workers = None
    if client is not None:
        workers = [round(w["metrics"]["memory"] / 1e6) for w in client.scheduler_info()["workers"].values()]
        client.close()
    import zarr
    a = zarr.open_array(str(out / "0"), mode="r")
    return {"wall": wall, "base_mb": base / 1e6, "peak_mb": box[0] / 1e6, "virtual_gib": float(virt),
            "out_shape": list(a.shape), "levels": len([p for p in out.iterdir() if p.name.isdigit()]), "workers_mb_end": workers}


def child(args):
    if args.child.startswith("large"):
        tool, cl = args.child.split(":")[1], args.child.endswith(":cluster")
        res = run_large(tool, cl)
    else:
        tool, name = args.child.split(":")
        res = run_small(tool, name)
    print("RESULT " + json.dumps(res))


def spawn(spec, timeout=None):
    try:
        p = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "): return json.loads(line[7:])
    return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child"); ap.add_argument("--out", default=str(Path(__file__).parent / "RESULTS_fusion.md"))
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    if args.child: return child(args)
    import numpy as np
    from multiview_reg.metrics import ncc
    load0 = os.getloadavg()[0]
    rows, notes = [], []
    for name in CASES:
        if args.only and name not in args.only: continue
        r = {t: spawn(f"{t}:{name}") for t in ("ours", "peer")}
        agree = "-"
        if "npy" in r["ours"] and "npy" in r["peer"]:
            a, b = np.load(r["ours"]["npy"]), np.load(r["peer"]["npy"])
            m = tuple(slice(min(16, s // 4), s - min(16, s // 4)) for s in a.shape)
            agree = f"{ncc(a[m], b[m]):.6f}"
        rows.append((name, r, agree)); print(name, r, agree, flush=True)
    large = {}
    if not args.only or "large" in args.only:
        large["ours"] = spawn("large:ours"); print("large ours", large["ours"], flush=True)
        large["ours_cluster"] = spawn("large:ours:cluster"); print("large cluster", large["ours_cluster"], flush=True)
        if not (args.only and "nopeer" in args.only):
            large["peer"] = spawn("large:peer", timeout=PEER_TIMEOUT); print("large peer", large["peer"], flush=True)
    load1 = os.getloadavg()[0]
    write(args.out, rows, large, load0, load1)


def _fmt(r):
    if "error" in r: return f"failed: {r['error']}", "-", "-"
    return f"{r['wall']:.2f}", f"{r.get('cpu', float('nan')):.2f}", f"{r['peak_mb']:.0f} MB (+{r['peak_mb'] - r['base_mb']:.0f})"


def write(path, rows, large, load0, load1):
    L = ["# Fusion: fuse() against multiview-stitcher's fusion.fuse", "",
         f"`python bench/bench_fusion.py` (see its docstring). Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
         f"load average {load0:.1f} -> {load1:.1f} (2 cores, shared).", "",
         "| case | tool | wall (s) | CPU (s) | peak RSS (+ over before the call) | speed-up (peer wall / ours) | NCC ours vs peer (interior) |",
         "|---|---|---|---|---|---|---|"]
    for name, r, agree in rows:
        sp = f"{r['peer']['wall'] / r['ours']['wall']:.1f}x" if "wall" in r["peer"] and "wall" in r["ours"] else "-"
        for t in ("ours", "peer"):
            w, c, m = _fmt(r[t])
            L.append(f"| {name} {r[t].get('shape', '')} | {'multiview_reg' if t == 'ours' else 'multiview-stitcher'} | {w} | {c} | {m} | {sp if t == 'ours' else ''} | {agree if t == 'ours' else ''} |")
    if large:
        L += ["", f"Large case: procedural_dataset grid {LARGE['grid']} of {LARGE['tile_shape']} uint16 "
              f"({large.get('ours', {}).get('virtual_gib', float('nan')):.0f} GiB virtual), fused at spacing {LARGE_SPACING} "
              "(pyramid level 4) to OME-Zarr, max_memory='2GB'.", "",
              "| run | wall (s) | peak RSS (+ over before) | output (level 0) | levels | notes |", "|---|---|---|---|---|---|"]
        for k, lab in (("ours", "multiview_reg, threads"), ("ours_cluster", "multiview_reg, LocalCluster 2 workers x 1 thread, 2 GB each"),
                       ("peer", "multiview-stitcher, threads, output_zarr_url")):
            if k not in large: continue
            r = large[k]
            if "error" in r: L.append(f"| {lab} | - | - | - | - | {r['error']} |"); continue
            note = f"worker memory at the end {r['workers_mb_end']} MB; peak RSS includes the workers" if r.get("workers_mb_end") else ""
            L.append(f"| {lab} | {r['wall']:.0f} | {r['peak_mb']:.0f} MB (+{r['peak_mb'] - r['base_mb']:.0f}) | {r['out_shape']} | {r['levels']} | {note} |")
    Path(path).write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
