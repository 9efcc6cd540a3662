"""Registering a dataset far larger than memory: a lazily generated 3D tile grid at a coarse pyramid level.

Run by hand:  python bench/bench_scale.py [--grid 10 10] [--out bench/RESULTS_scale.md] [--only threads|cluster]

The dataset is `multiview_reg.data.procedural_dataset`: tiles of 256 x 2048 x 2048 uint16 (2 GiB each at full
resolution), every chunk rendered on demand from a spatial-hash blob specimen, with a known true position per tile
(stage jitter ~4 px). Nothing is on disk; a chunk costs CPU when (and only when) it is read.

Each configuration runs in a fresh subprocess:
- `threads`: `register_within_memory(views, "stage", max_memory="2GB", max_pixels=2**19)` under dask's threaded
  scheduler; peak RSS = the process's ru_maxrss, and a 50 ms psutil sampler gives the peak above the RSS before
  the call;
- `cluster`: the same call with a `distributed.LocalCluster(n_workers=2, threads_per_worker=1,
  memory_limit="2GB")` active; peak RSS per worker = each worker's own ru_maxrss (asked from the workers with
  `client.run` at the end), plus the client process's; the worker logs are searched for spill/pause/memory warnings.
  Since ru_maxrss is a lifetime high-water mark (a worker's is ~630 MB before any task, from its start-up), the
  run also records each worker's RSS before the call (after importing what a task imports), its peak during the
  call (a 50 ms sampler thread in each worker), and the client's peak above its RSS before the call.
Accuracy: `registration_error` (rigid gauge, tile-corner error in level-0 pixels) against the truth, before
(stage) and after. The load average of the shared machine is recorded with the results.
"""
import argparse, json, os, subprocess, sys, threading, time
from pathlib import Path

TILE = (256, 2048, 2048)
CHUNKS = (32, 64, 64)
BUDGET = "2GB"
MAX_PIXELS = 2**19


def _sampler(proc, stop, box):
    while not stop.is_set():
        try: box[0] = max(box[0], proc.memory_info().rss)
        except Exception: pass
        time.sleep(0.05)


def run_one(mode, grid):
    import resource, warnings
    import numpy as np, psutil
    warnings.simplefilter("ignore")
    from multiview_reg.data import procedural_dataset, registration_error
    from multiview_reg.scale import plan_registration
    from multiview_reg.register import register_within_memory
    from multiview_reg.spatial import as_view
    views, truth = procedural_dataset(grid=tuple(grid), tile_shape=TILE, overlap=0.1, chunks=CHUNKS, n_levels=5, seed=0)
    proc = psutil.Process()
    out = {"mode": mode, "grid": list(grid), "tile": list(TILE), "chunks": list(CHUNKS), "budget": BUDGET,
           "max_pixels": MAX_PIXELS, "load_before": os.getloadavg()}
    client = cluster = None
    if mode == "cluster":
        import distributed
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="2GB", processes=True,
                                           dashboard_address=None)
        client = distributed.Client(cluster)
    t0 = time.perf_counter()
    plan = plan_registration(views, "stage", max_memory=BUDGET, max_pixels=MAX_PIXELS)
    out["plan_s"] = time.perf_counter() - t0
    out["plan"] = dict(plan)
    out["plan_details"] = {k: plan.details[k] for k in ("level", "max_task_bytes", "read_bytes", "full_bytes", "n_edges", "threads")}
    out["levels"] = plan.details["levels"]
    if client is not None:  # the workers' own RSS before the call, after importing what a task imports
        def _warm():
            import psutil, multiview_reg.register, multiview_reg.phase_correlation, multiview_reg.data  # noqa: F401
            return psutil.Process().memory_info().rss
        out["worker_rss_before_MB"] = [v / 1e6 for v in client.run(_warm).values()]
        def _maxrss():
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["worker_ru_maxrss_before_MB"] = [v / 1e6 for v in client.run(_maxrss).values()]
        def _start_sampler(dask_worker):  # a sampler thread in each worker: its RSS peak during the call
            import psutil, threading, time
            w = dask_worker
            w._rss_box, w._rss_stop = [psutil.Process().memory_info().rss], threading.Event()
            def loop(p=psutil.Process()):
                while not w._rss_stop.is_set():
                    w._rss_box[0] = max(w._rss_box[0], p.memory_info().rss); time.sleep(0.05)
            threading.Thread(target=loop, daemon=True).start()
        client.run(_start_sampler)
    base = proc.memory_info().rss
    stop, box = threading.Event(), [base]
    th = threading.Thread(target=_sampler, args=(proc, stop, box), daemon=True); th.start()
    t0 = time.perf_counter()
    res = register_within_memory(views, "stage", max_memory=BUDGET, max_pixels=MAX_PIXELS,
                                 new_transform_key="registered", return_dict=True, progress=False)
    out["wall_s"] = time.perf_counter() - t0
    stop.set(); th.join()
    out["timing"] = res["timing"]
    out["rss_before_MB"] = base / 1e6
    out["rss_peak_above_before_MB"] = (box[0] - base) / 1e6
    out["ru_maxrss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    plain = [as_view(v) for v in views]
    out["err_stage_px"] = registration_error(plain, "stage", truth)
    out["err_px"] = registration_error(plain, "registered", truth)
    for k in ("err_stage_px", "err_px"):
        out[k] = {"mean_px": out[k]["mean_px"], "max_px": out[k]["max_px"]}
    out["n_pairs"] = res["pairwise_registration"]["graph"].number_of_edges()
    if client is not None:
        out["worker_ru_maxrss_MB"] = [v / 1e6 for v in client.run(_maxrss).values()]
        def _stop_sampler(dask_worker):
            w = dask_worker; w._rss_stop.set(); return w._rss_box[0]
        out["worker_rss_peak_MB"] = [v / 1e6 for v in client.run(_stop_sampler).values()]
        logs = "\n".join(m for lines in client.get_worker_logs().values() for _, m in lines)
        out["worker_memory_warnings"] = [l for l in logs.splitlines()
                                         if any(w in l.lower() for w in ("spill", "memory use is high", "pausing", "exceeded", "restart"))][:10]
        client.close(); cluster.close()
    out["load_after"] = os.getloadavg()
    print("RESULT " + json.dumps(out))


def _gib(grid):
    return grid[0] * grid[1] * TILE[0] * TILE[1] * TILE[2] * 2 / 2**30


def _markdown(results, grid=None):
    lines = [f"# Scale: registering lazily generated grids of {TILE[0]}x{TILE[1]}x{TILE[2]} uint16 tiles, far larger than memory", "",
             "`python bench/bench_scale.py` (see its docstring). Lazily generated tiles (`procedural_dataset`, chunks "
             f"{CHUNKS}, 5 pyramid levels, overlap 10 %, stage jitter ~4 px), registered with "
             f"`register_within_memory(views, 'stage', max_memory={BUDGET!r}, max_pixels=2**19)` (phase correlation, "
             "default pruning and global optimisation). Machine: 2 cores, 24 GiB RAM, shared with other jobs (load "
             "average below). Errors: `registration_error`, rigid gauge, tile-corner error in level-0 pixels.", ""]
    lines += ["| grid (virtual size) | run | level (largest crop) | pairs | wall (s) | graph / pairwise / resolution (s) | peak RSS | stage error mean / max (px) | registered error mean / max (px) | load avg before -> after |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lv = r["levels"][r["plan_details"]["level"]]
        t = r["timing"]
        if r["mode"] == "cluster":
            rss = (f"client {r['ru_maxrss_MB']:.0f} MB; workers {', '.join(f'{x:.0f}' for x in r['worker_ru_maxrss_MB'])} MB "
                   f"(limit 2 GB each)")
            if "worker_rss_before_MB" in r:  # during the call, above the RSS before it
                rss += (f"; during the call: client +{r['rss_peak_above_before_MB']:.0f} MB over {r['rss_before_MB']:.0f} MB, "
                        "workers " + ", ".join(f"+{p - b:.0f} MB over {b:.0f} MB" for p, b in
                                                zip(r["worker_rss_peak_MB"], r["worker_rss_before_MB"])))
            name = "LocalCluster 2 workers x 1 thread, 2 GB each"
        else:
            rss = f"{r['ru_maxrss_MB']:.0f} MB (+{r['rss_peak_above_before_MB']:.0f} MB over the {r['rss_before_MB']:.0f} MB before the call)"
            name = "one process, threads"
        lines.append(f"| {r['grid'][0]}x{r['grid'][1]} ({_gib(r['grid']):.0f} GiB) | {name} | {r['plan_details']['level']} {tuple(lv['max_crop_shape'])} | {r['n_pairs']} | "
                     f"{r['wall_s']:.0f} | {t['graph']:.1f} / {t['pairwise']:.0f} / {t['resolution']:.1f} | {rss} | "
                     f"{r['err_stage_px']['mean_px']:.2f} / {r['err_stage_px']['max_px']:.2f} | "
                     f"{r['err_px']['mean_px']:.3f} / {r['err_px']['max_px']:.3f} | "
                     f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} |")
    lines.append("")
    for r in results:
        d = r["plan_details"]
        lines.append(f"- {r['grid'][0]}x{r['grid'][1]} {r['mode']}: plan {r['plan']} (planning {r['plan_s']:.1f} s); largest task by the model "
                     f"{d['max_task_bytes'] / 1e6:.0f} MB; chunk bytes read by all tasks {d['read_bytes'] / 1e9:.2f} GB "
                     f"of {d['full_bytes'] / 1e9:.0f} GB full-resolution data.")
        if r["mode"] == "cluster":
            lines.append(f"  Worker log lines about spilling/pausing/memory: {len(r['worker_memory_warnings'])}"
                         + (f": {r['worker_memory_warnings']}" if r["worker_memory_warnings"] else "."))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, nargs=2, default=(10, 10))
    ap.add_argument("--out", default=str(Path(__file__).parent / "RESULTS_scale.md"))
    ap.add_argument("--only", nargs="*", default=["threads", "cluster"])
    ap.add_argument("--child", default=None)
    ap.add_argument("--merge", nargs="*", default=None, help="JSON result files of earlier runs to write together")
    a = ap.parse_args()
    if a.merge:
        results = [r for f in a.merge for r in json.loads(Path(f).read_text())]
        Path(a.out).write_text(_markdown(results)); print(Path(a.out).read_text()); return
    if a.child:
        run_one(a.child, a.grid); return
    results = []
    for mode in a.only:
        p = subprocess.run([sys.executable, __file__, "--child", mode, "--grid", *map(str, a.grid)],
                           capture_output=True, text=True)
        line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if not line:
            print(p.stderr[-4000:]); raise SystemExit(f"{mode} failed")
        r = json.loads(line[-1][7:]); results.append(r)
        print(json.dumps(r, indent=1, default=str)[:3000], flush=True)
        Path(a.out).with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    Path(a.out).write_text(_markdown(results, a.grid))
    print(Path(a.out).read_text())


if __name__ == "__main__":
    main()
