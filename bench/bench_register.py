"""register() against multiview-stitcher's registration.register on the same generated datasets.

Run by hand:  python bench/bench_register.py [--out bench/RESULTS_register.md] [--only NAME ...]

Each (tool, dataset) run is a fresh subprocess, so that imports, caches and memory do not leak between runs.
Inside it the dataset is generated, then registration is timed (wall and CPU time) while a thread samples the
process RSS every 20 ms (peak above the RSS right before the call = the registration's own memory). Accuracy of
both tools with `multiview_reg.data.registration_error` (rigid gauge, corner error in pixels) against the truth.
The peer runs in its fastest configuration, `dask.config.set(scheduler="threads")` (by default it spawns a process
pool), with its default phase correlation pairwise function, default pruning and global optimisation.
"""
import argparse, json, os, subprocess, sys, threading, time
from pathlib import Path

DATASETS = {
    "2d_4x4_512": dict(ndim=2, grid=(4, 4), tile_shape=(512, 512), seed=0),
    "2d_8x8_256": dict(ndim=2, grid=(8, 8), tile_shape=(256, 256), seed=0),
    "3d_3x3_64x256x256": dict(ndim=3, grid=(1, 3, 3), tile_shape=(64, 256, 256), spacing=(2, .5, .5), seed=0),
    "2d_4x4_512_two_empty": dict(ndim=2, grid=(4, 4), tile_shape=(512, 512), empty_tiles=(5, 10), seed=0),
}


def _rss_sampler(proc, stop, box):
    while not stop.is_set():
        box[0] = max(box[0], proc.memory_info().rss)
        time.sleep(0.02)


def run_one(tool, name):
    import numpy as np, psutil, warnings
    warnings.simplefilter("ignore")
    from multiview_reg.data import tiled_dataset, registration_error
    from multiview_reg.spatial import set_affine
    kw = dict(DATASETS[name])
    views, truth = tiled_dataset(**kw)
    proc = psutil.Process()
    if tool == "peer":
        import dask
        from multiview_stitcher import registration, msi_utils
        msims = [msi_utils.get_msim_from_sim(v, scale_factors=[]) for v in views]
    else:
        from multiview_reg.register import register
    base = proc.memory_info().rss
    box, stop = [base], threading.Event()
    th = threading.Thread(target=_rss_sampler, args=(proc, stop, box), daemon=True); th.start()
    c0, t0 = time.process_time(), time.perf_counter()
    if tool == "peer":
        with dask.config.set(scheduler="threads"):
            params = registration.register(msims, transform_key="stage", reg_channel_index=0,
                                           new_transform_key="registered")
    else:
        params = register(views, "stage", new_transform_key="registered", progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stop.set(); th.join()
    if tool == "peer":
        for v, p in zip(views, params):
            a = p.squeeze().transpose("x_in", "x_out").values if "t" in p.dims else p.transpose("x_in", "x_out").values
            set_affine(v, a, "registered", base_key="stage")
    before = registration_error(views, "stage", truth)
    err = registration_error(views, "registered", truth)
    out = dict(tool=tool, dataset=name, wall_s=wall, cpu_s=cpu, peak_mb=(box[0] - base) / 2**20,
               rss_mb=box[0] / 2**20, mean_px=float(err["mean_px"]), max_px=float(err["max_px"]),
               before_mean_px=float(before["mean_px"]))
    if "empty_tiles" in kw:
        good = [i for i in range(len(views)) if i not in kw["empty_tiles"]]
        eg = registration_error([views[i] for i in good], "registered", [truth[i] for i in good])
        out["good_mean_px"], out["good_max_px"] = float(eg["mean_px"]), float(eg["max_px"])
        out["empty_err_px"] = [float(x) for x in err["per_view_px"][list(kw["empty_tiles"])]]
        out["empty_stage_err_px"] = [float(x) for x in before["per_view_px"][list(kw["empty_tiles"])]]
    print("RESULT " + json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS_register.md")))
    ap.add_argument("--only", nargs="*", default=list(DATASETS))
    ap.add_argument("--run", nargs=2, metavar=("TOOL", "DATASET"))
    a = ap.parse_args()
    if a.run: return run_one(*a.run)
    rows, load0 = [], os.getloadavg()
    for name in a.only:
        for tool in ("ours", "peer"):
            t = time.perf_counter()
            p = subprocess.run([sys.executable, __file__, "--run", tool, name], capture_output=True, text=True)
            line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                print(f"{tool} {name} FAILED:\n{p.stderr[-2000:]}", flush=True)
                rows.append(dict(tool=tool, dataset=name, failed=p.stderr.strip().splitlines()[-1:] or ["?"]))
                continue
            r = json.loads(line[7:]); r["load"] = os.getloadavg()[0]
            rows.append(r); print(r, f"(subprocess {time.perf_counter() - t:.0f} s)", flush=True)
    load1 = os.getloadavg()
    write(rows, a.out, load0, load1)


def write(rows, path, load0, load1):
    import platform
    by = {(r["tool"], r["dataset"]): r for r in rows}
    L = ["# register(): multiview_reg vs multiview-stitcher", "",
         f"`python bench/bench_register.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
         f"{os.cpu_count()} cores, Python {platform.python_version()}. Load average at start "
         f"{load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f}, at end {load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f} "
         "(the machine is shared with other jobs: wall times are inflated, CPU times less so).", "",
         "Each run is a fresh subprocess; time = the registration call only (dataset generated before); peak memory = "
         "peak RSS during the call minus RSS before it (sampled every 20 ms). Peer: `registration.register` with "
         "`dask.config.set(scheduler='threads')`, defaults otherwise (phase correlation, alternating-pattern pruning, "
         "global optimisation). Ours: `register(views, 'stage')` with defaults. Error: corner error against the "
         "ground truth, rigid gauge removed, pixels.", "",
         "| dataset | ours wall / CPU s | peer wall / CPU s | speed-up (wall, CPU) | ours peak MB | peer peak MB | "
         "ours mean / max px | peer mean / max px | stage mean px |", "|---|---|---|---|---|---|---|---|---|"]
    for name in DATASETS:
        o, p = by.get(("ours", name)), by.get(("peer", name))
        if o is None and p is None: continue
        def f(r, k, fmt): return "failed" if r is None or "failed" in r else format(r[k], fmt)
        sp = (f"{p['wall_s'] / o['wall_s']:.1f}x, {p['cpu_s'] / o['cpu_s']:.1f}x"
              if o and p and "failed" not in o and "failed" not in p else "-")
        L.append(f"| {name} | {f(o, 'wall_s', '.2f')} / {f(o, 'cpu_s', '.2f')} | {f(p, 'wall_s', '.2f')} / "
                 f"{f(p, 'cpu_s', '.2f')} | {sp} | {f(o, 'peak_mb', '.0f')} | {f(p, 'peak_mb', '.0f')} | "
                 f"{f(o, 'mean_px', '.3f')} / {f(o, 'max_px', '.3f')} | {f(p, 'mean_px', '.3f')} / {f(p, 'max_px', '.3f')} | "
                 f"{f(o or p, 'before_mean_px', '.2f')} |")
    for name in DATASETS:
        o, p = by.get(("ours", name)), by.get(("peer", name))
        if o and "empty_err_px" in o:
            L += ["", f"Empty-tile case ({name}): error of the 14 textured tiles: ours mean {o['good_mean_px']:.3f} / max "
                  f"{o['good_max_px']:.3f} px" + (f", peer mean {p['good_mean_px']:.3f} / max {p['good_max_px']:.3f} px"
                                                  if p and "good_mean_px" in p else "") +
                  f". The two empty tiles: ours {[round(x, 2) for x in o['empty_err_px']]} px (their stage error "
                  f"{[round(x, 2) for x in o['empty_stage_err_px']]} px)" +
                  (f", peer {[round(x, 2) for x in p['empty_err_px']]} px" if p and "empty_err_px" in p else "") + "."]
    fails = [r for r in rows if "failed" in r]
    if fails: L += ["", "Failures: " + "; ".join(f"{r['tool']} {r['dataset']}: {r['failed']}" for r in fails)]
    L += ["", "Raw rows:", "", "```"] + [json.dumps(r) for r in rows] + ["```", ""]
    Path(path).write_text("\n".join(L))
    print("wrote", path)


if __name__ == "__main__":
    main()
