"""Per-pair overhead of register() (issue 20): a large grid with a trivial pairwise function, so that the time is
register()'s own (graph, crops, dask tasks, link checks, resolution, result), not the registrations'.

Run by hand:  python bench/bench_overhead.py [--grid 40] [--tile 32] [--profile]

The trivial function returns the initial transform with quality 1 (the contract's pixel form); the dataset is a
`data.tiled_dataset` grid of (grid x grid) tiles of tile x tile pixels. Prints wall and CPU time of the call, the
number of registered pairs, and with --profile the top functions by cumulative time.
"""
import argparse, cProfile, io, pstats, time, warnings
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def trivial(fixed_data, moving_data, **kwargs):
    "Identity in pixel space, quality 1: no work, so register() shows its own cost."
    return {"affine_matrix": np.eye(fixed_data.ndim + 1), "quality": 1.0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=40)
    ap.add_argument("--tile", type=int, default=32)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one RESULT {json} line (for bench_round2.py)")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    from multiview_reg.data import tiled_dataset
    from multiview_reg.register import register
    views, _ = tiled_dataset(ndim=2, grid=(a.grid, a.grid), tile_shape=(a.tile, a.tile), seed=0)
    pr = cProfile.Profile()
    c0, t0 = time.process_time(), time.perf_counter()
    if a.profile: pr.enable()
    res = register(views, "stage", pairwise_reg_func=trivial, progress=False, return_dict=True)
    if a.profile: pr.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = sum(len(s) for s in res.link_status.values())
    print(f"{len(views)} views, {n} pairs: wall {wall:.1f} s, CPU {cpu:.1f} s ({1e3 * wall / max(n, 1):.1f} ms per pair); "
          f"timing {({k: round(v, 1) for k, v in res.timing.items()})}")
    if a.json:
        import json
        print("RESULT " + json.dumps(dict(views=len(views), pairs=n, wall_s=wall, cpu_s=cpu, timing=res.timing)))
    if a.profile:
        s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(40); print(s.getvalue())


if __name__ == "__main__":
    main()
