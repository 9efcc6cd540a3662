"""Speed, round two (issue 20): the rotation-capable backends side by side with multiview-stitcher, the rigid
resolution of 10,000 views, and a cProfile of the 3D phase-correlation pairwise path.

Run by hand:  python bench/bench_speed.py [--only rot_elastix rot_sitk resolve_10k profile_3d] [--out bench/RESULTS_speed.md]

Each (case, tool) runs in a fresh subprocess (imports, itk's first-call cost and memory do not leak between runs);
time = the call only (dataset generated before), wall and CPU. Error: `metrics.registration_error` (rigid gauge,
corner error, px) against the known truth.
- rot_*: 3D 2x2 grid of 32x128x128 tiles, spacing (2, .5, .5), each tile rotated by N(0, 0.015 rad) (seed 0: 2.0,
  0.5, 0.1, 0.8 deg), `register(..., pairwise_reg_func=..., groupwise_resolution_kwargs={'transform': 'rigid'})`;
  peer: `registration.register(..., pairwise_reg_func=registration_ITKElastix, groupwise_resolution_kwargs=
  {'transform': 'rigid'})` with dask threads. Both with their default stages (ours: rigid since issue 20; the peer:
  translation then rigid; tool 'peer_rigid' gives the peer `transform_types=['rigid']` too), default pruning.
  rot_elastix: a fresh process (both pay itk-elastix's loading inside the call); rot_elastix_warm: `itk.ParameterObject`
  loaded before the call (itk's numpy bridge, ~0.4 s, is still loaded inside it); rot_elastix_second: the same
  registration run once untimed, then timed: everything loaded, as for a second registration in a notebook session.
- resolve_10k: `resolve(synthetic_graph((100, 100), 'rigid', rotation=0.005, noise=0.2, outlier_fraction=0.01),
  'global_optimization', transform='rigid')`; tool 'before' runs the same call with multiview_reg/resolvers.py as of
  commit 8b687c1 (the solver before issue 20's factor reuse, read with `git show`), tool 'ours' the current one.
  The 'ours' row also gives max |G_ours - G_before| over all correction entries (both runs save their corrections
  to the temp folder).
- profile_3d: cProfile of `register_edge` over every edge of a 3D 3x3 grid of 48x192x192 tiles (phase correlation).
"""
import argparse, json, os, subprocess, sys, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, also when run from bench/

ROT = dict(ndim=3, grid=(1, 2, 2), tile_shape=(32, 128, 128), spacing=(2, .5, .5), rotation=0.015, seed=0)
CASES = {"rot_elastix": ("ours", "peer"), "rot_elastix_warm": ("ours", "peer"), "rot_elastix_second": ("ours", "peer", "peer_rigid"), "rot_sitk": ("ours",), "resolve_10k": ("before", "ours"), "profile_3d": ("ours",)}


def _timed(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def run_rot(tool, method):
    "One rotated-grid registration; method 'elastix_warm' loads itk-elastix's wrappers before the timed call (import_s)."
    import numpy as np
    import_s, second = None, method.endswith("_second")
    if second: method = method[:-7]
    if method.endswith("_warm"):  # both tools' first elastix call loads the same itk wrappers (~18 s here)
        method = method[:-5]
        t0 = time.perf_counter(); import itk; itk.ParameterObject; import_s = time.perf_counter() - t0
    from multiview_reg.data import tiled_dataset
    from multiview_reg.metrics import registration_error
    from multiview_reg.spatial import set_affine
    views, truth = tiled_dataset(**ROT)
    if tool.startswith("peer"):
        import dask
        from multiview_stitcher import registration, msi_utils
        msims = [msi_utils.get_msim_from_sim(v, scale_factors=[]) for v in views]
        kw = {"pairwise_reg_func_kwargs": {"transform_types": ["rigid"]}} if tool == "peer_rigid" else {}
        def call():
            with dask.config.set(scheduler="threads"):
                return registration.register(msims, transform_key="stage", reg_channel_index=0, new_transform_key="registered",
                                             pairwise_reg_func=registration.registration_ITKElastix,
                                             groupwise_resolution_kwargs={"transform": "rigid"}, **kw)
        if second: call()
        params, wall, cpu = _timed(call)
        for v, p in zip(views, params):
            set_affine(v, p.squeeze().transpose("x_in", "x_out").values if "t" in p.dims else p.transpose("x_in", "x_out").values,
                       "registered", base_key="stage")
        n_pairs = "4 (alternating pattern)"
    else:
        from multiview_reg.register import register
        call = lambda: register(views, "stage", new_transform_key="registered", pairwise_reg_func=method,
                                groupwise_resolution_kwargs={"transform": "rigid"}, progress=False)
        if second: call()
        res, wall, cpu = _timed(call)
        n_pairs = "pruned graph"
    err = registration_error(views, "registered", truth)
    return dict(wall_s=wall, cpu_s=cpu, mean_px=float(err["mean_px"]), max_px=float(err["max_px"]), pairs=str(n_pairs),
                import_s=import_s)



PREVIOUS_RESOLVERS = "8b687c1810264a4a3a020d0d1961bdc173878d44"  # resolvers.py before issue 20's factor reuse


def _previous_resolve():
    "resolve() of multiview_reg/resolvers.py at PREVIOUS_RESOLVERS, loaded from git into a module of its own."
    import types
    src = subprocess.run(["git", "show", f"{PREVIOUS_RESOLVERS}:multiview_reg/resolvers.py"], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[1]).stdout
    mod = types.ModuleType("multiview_reg._resolvers_previous"); mod.__package__ = "multiview_reg"
    exec(compile(src, "resolvers@" + PREVIOUS_RESOLVERS[:7], "exec"), mod.__dict__)
    return mod.resolve


def run_resolve(tool="ours"):
    from multiview_reg.data import synthetic_graph
    from multiview_reg.resolvers import resolve
    from multiview_reg.metrics import correction_error
    if tool == "before": resolve = _previous_resolve()
    g, truth = synthetic_graph((100, 100), transform="rigid", rotation=0.005, noise=0.2, outlier_fraction=0.01, seed=0)
    (params, info), wall, cpu = _timed(lambda: resolve(g, "global_optimization", transform="rigid"))
    err = correction_error(params, truth, g, "rigid")
    m = info["metrics"]["per_component"][0]
    import numpy as np, tempfile
    G = np.array([params[n] for n in g.nodes])
    np.save(Path(tempfile.gettempdir()) / f"bench_resolve_10k_{tool}.npy", G)
    other = Path(tempfile.gettempdir()) / "bench_resolve_10k_before.npy"
    diff = float(np.abs(G - np.load(other)).max()) if tool == "ours" and other.exists() else None
    return dict(wall_s=wall, cpu_s=cpu, rms_px=float(err["rms"]), max_px=float(err["max"]), rounds=m["rounds"],
                solver_iterations=m["solver_iterations"], max_diff_vs_before=diff)


def run_profile():
    import cProfile, io, pstats
    from multiview_reg.data import tiled_dataset
    from multiview_reg.graph import build_overlap_graph
    from multiview_reg.pairwise import register_edge
    views, truth = tiled_dataset(ndim=3, grid=(1, 3, 3), tile_shape=(48, 192, 192), spacing=(2, .5, .5), seed=0)
    edges = sorted(tuple(sorted(e)) for e in build_overlap_graph(views, "stage").edges)
    pr = cProfile.Profile()
    def call():
        pr.enable()
        for u, v in edges: register_edge(views, u, v, "stage")
        pr.disable()
    _, wall, cpu = _timed(call)
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(15)
    top = [l for l in s.getvalue().splitlines() if l.strip() and (l.strip()[0].isdigit() or "ncalls" in l)]
    return dict(wall_s=wall, cpu_s=cpu, pairs=len(edges), profile=top)


def run_one(case, tool):
    warnings.simplefilter("ignore")
    if case.startswith("rot_"): out = run_rot(tool, case[4:])
    elif case == "resolve_10k": out = run_resolve(tool)
    else: out = run_profile()
    print("RESULT " + json.dumps(dict(out, case=case, tool=tool)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS_speed.md")))
    ap.add_argument("--only", nargs="*", default=list(CASES))
    ap.add_argument("--run", nargs=2, metavar=("CASE", "TOOL"))
    a = ap.parse_args()
    if a.run: return run_one(*a.run)
    rows = []
    for case in a.only:
        for tool in CASES[case]:
            p = subprocess.run([sys.executable, __file__, "--run", case, tool], capture_output=True, text=True)
            line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
            r = json.loads(line[7:]) if line else dict(case=case, tool=tool, failed=(p.stderr.strip().splitlines() or ["?"])[-1])
            r["load"] = os.getloadavg()[0]; rows.append(r); print(r, flush=True)
    Path(a.out).with_suffix(".jsonl").open("a").write("".join(json.dumps(r) + "\n" for r in rows))
    print("rows appended to", Path(a.out).with_suffix(".jsonl"))


if __name__ == "__main__":
    main()
