"""Benchmark: global resolution of a 100x100 tile grid (10,000 views, 19,800 edges).

Run by hand:  python bench/bench_resolvers.py [--grid 100] [--out bench/RESULTS_resolvers.md]
Measures wall time (one untraced run), peak traced Python/numpy memory (tracemalloc, a second run; SuperLU's C
allocations are not traced) and the process's peak RSS at the end (resource.getrusage),
and the accuracy against the known truth (RMS corner error after removing the rigid gauge, physical = px here).
"""
import argparse, platform, time, tracemalloc, os
import numpy as np
import psutil
from multiview_reg.resolvers import synthetic_graph, resolve, correction_error


def run(g, truth, method, **kw):
    "Time one resolve (no tracing), then repeat it under tracemalloc for the peak memory of numpy/Python objects."
    t0 = time.perf_counter()
    params, info = resolve(g, method, **kw)
    dt = time.perf_counter() - t0
    tracemalloc.start()
    resolve(g, method, **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    err = correction_error(params, truth, g, "rigid")
    out = set(g.graph.get("outliers", []))
    comp = info["metrics"]["per_component"][0]
    return {"time_s": dt, "peak_mb": peak / 1e6, "rms_err": err["rms"], "max_err": err["max"],
            "outliers_used": len(out & set(info["used_edges"])), "n_outliers": len(out),
            "removed": len(comp.get("removed_edges", [])), "rounds": comp.get("rounds", "-"),
            "solver_iterations": comp.get("solver_iterations", "-")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=100)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS_resolvers.md"))
    a = ap.parse_args()
    n = a.grid
    rows = []
    t0 = time.perf_counter()
    g_t, truth_t = synthetic_graph((n, n), transform="translation", noise=0.2, outlier_fraction=0.01, seed=0)
    g_r, truth_r = synthetic_graph((n, n), transform="rigid", rotation=0.005, noise=0.2, outlier_fraction=0.01, seed=0)
    t_build = time.perf_counter() - t0
    cases = [("translation truth", g_t, truth_t, "global_optimization", {"transform": "translation"}),
             ("translation truth", g_t, truth_t, "linear_two_pass", {"transform": "translation"}),
             ("translation truth", g_t, truth_t, "shortest_paths", {}),
             ("rigid truth (0.005 rad)", g_r, truth_r, "global_optimization", {"transform": "rigid"}),
             ("rigid truth (0.005 rad)", g_r, truth_r, "global_optimization", {"transform": "translation"}),
             ("rigid truth (0.005 rad)", g_r, truth_r, "linear_two_pass", {"transform": "rigid"})]
    for name, g, truth, method, kw in cases:
        r = run(g, truth, method, **kw)
        r.update(case=name, method=method, kw=kw)
        rows.append(r)
        print(name, method, kw, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k not in ("case", "method", "kw")}, flush=True)
    lines = [f"# Resolver benchmark: {n}x{n} grid ({n * n} views, {g_t.number_of_edges()} edges)", "",
             f"Machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} cores (shared with other jobs), "
             f"Python {platform.python_version()}, numpy {np.__version__}. Graph construction (networkx, synthetic): {t_build:.1f} s.",
             "Pairwise noise 0.2 px per dim (RMS length 0.28 px), 1% gross outliers (20-100 px, same quality as good edges);",
             "tiles 100 px, 10% overlap, stage jitter 3 px. Error: RMS over views of the corner error after removing the rigid gauge (px).",
             "Time and memory are for `resolve(...)` only (graph to corrections, incl. residuals of every edge).", "",
             "| truth | method | kwargs | time (s) | peak traced (MB) | RMS err (px) | max err (px) | outliers used | edges removed | rounds | solver its |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['method']} | {r['kw']} | {r['time_s']:.1f} | {r['peak_mb']:.0f} | "
                     f"{r['rms_err']:.3f} | {r['max_err']:.2f} | {r['outliers_used']}/{r['n_outliers']} | {r['removed']} | "
                     f"{r['rounds']} | {r['solver_iterations']} |")
    import resource
    lines += ["", f"Peak RSS of the whole benchmark process (graphs + all runs): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB.",
              "", "For reference (bench notes in PEERS.md): multiview-stitcher's Gauss-Seidel optimiser hit its iteration cap after "
              "218 s at 1,600 tiles with 2.4x the least-squares error."]
    open(a.out, "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
