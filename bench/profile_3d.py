"""Profile and accuracy of the 3D phase-correlation pairwise path (issue 20, speed-3d).

Run by hand:  python bench/profile_3d.py [--top 25] [--seeds 0 1 2] [--noise 0.02 0.1] [--no-register]

Dataset: `tiled_dataset(ndim=3, grid=(1, 3, 3), tile_shape=(48, 192, 192), spacing=(2, .5, .5), seed=s, noise=n)`
(the grid of `bench_speed.py --only profile_3d`). For each dataset:
- `register_edge(views, u, v, "stage")` over every overlap edge (20 pairs, diagonals included) under cProfile; CPU
  (time.process_time) and wall time of the loop; per-pair error = |estimated - true translation| in pixels of each
  axis, Euclidean norm (truth: inv(T_v) @ T_u of the generated corrections);
- unless --no-register: `register(views, "stage")` end to end (defaults: max_shift 'auto', null samples for the link
  checks) under dask's synchronous scheduler, `registration_error` mean / max px, CPU and wall.
The profiles (top functions by cumulative time) are printed for the first dataset only.
"""
import argparse, cProfile, io, json, pstats, time, warnings
import sys
from pathlib import Path
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pair_errors(views, truth, edges, results):
    "Per-pair translation error, px (Euclidean norm over axes in pixel units)."
    sp = np.array([views[0].attrs["spacing"][d] for d in views[0].dims if d in "zyx"], float)
    out = []
    for (u, v), r in zip(edges, results):
        want = np.linalg.inv(np.asarray(truth[v])) @ np.asarray(truth[u])
        out.append(float(np.linalg.norm((np.asarray(r["affine_matrix"])[:-1, -1] - want[:-1, -1]) / sp)))
    return np.array(out)


def run(seed, noise, top, profile, do_register):
    from multiview_reg.data import tiled_dataset, registration_error
    from multiview_reg.graph import build_overlap_graph
    from multiview_reg.pairwise import register_edge
    views, truth = tiled_dataset(ndim=3, grid=(1, 3, 3), tile_shape=(48, 192, 192), spacing=(2, .5, .5), seed=seed,
                                 noise=noise)
    edges = sorted(tuple(sorted(e)) for e in build_overlap_graph(views, "stage").edges)
    register_edge(views, *edges[0], "stage")  # warm-up (imports, FFT plans)
    pr = cProfile.Profile() if profile else None
    c0, t0 = time.process_time(), time.perf_counter()
    if pr: pr.enable()
    results = [register_edge(views, u, v, "stage") for u, v in edges]
    if pr: pr.disable()
    out = dict(seed=seed, noise=noise, pairs=len(edges), pairs_cpu_s=time.process_time() - c0,
               pairs_wall_s=time.perf_counter() - t0)
    e = pair_errors(views, truth, edges, results)
    out.update(pair_mean_px=float(e.mean()), pair_max_px=float(e.max()))
    if do_register:
        import dask
        from multiview_reg.register import register
        pr2 = cProfile.Profile() if profile else None
        c0, t0 = time.process_time(), time.perf_counter()
        with dask.config.set(scheduler="synchronous"):  # one thread: the profile sees every pair
            if pr2: pr2.enable()
            register(views, "stage", new_transform_key="registered", progress=False)
            if pr2: pr2.disable()
        out.update(register_cpu_s=time.process_time() - c0, register_wall_s=time.perf_counter() - t0)
        err = registration_error(views, "registered", truth)
        out.update(mean_px=float(err["mean_px"]), max_px=float(err["max_px"]))
    for name, p in (("register_edge over every edge", pr), ("register() end to end, synchronous", pr2 if do_register else None)):
        if p is None: continue
        s = io.StringIO(); pstats.Stats(p, stream=s).sort_stats("cumulative").print_stats(top)
        print(f"=== cProfile: {name} (seed {seed}, noise {noise}) ===" + s.getvalue())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--noise", type=float, nargs="*", default=[0.02])
    ap.add_argument("--no-register", action="store_true")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    first = True
    for noise in a.noise:
        for seed in a.seeds:
            print("RESULT " + json.dumps(run(seed, noise, a.top, first, not a.no_register)), flush=True)
            first = False


if __name__ == "__main__":
    main()
