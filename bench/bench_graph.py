"""Benchmark: build the overlap graph of large tile grids (run by hand: `python bench/bench_graph.py`).

Views are lazy (a shared dask array of zeros), so only the graph code is timed, not image creation.
Writes bench/RESULTS_graph.md.
"""
import sys, time, platform
from pathlib import Path
import numpy as np
import dask.array as da
from multiview_reg.spatial import view_from_array, affine_from_translation, affine_from_rotation, compose_affines
from multiview_reg.graph import build_overlap_graph


def grid_views(ny, nx, tile=512, overlap=0.1, rotation=0.0, seed=0):
    "A ny x nx grid of lazy 2D tiles of `tile` pixels (spacing 1), optionally each rotated by ~N(0, rotation) rad."
    data = da.zeros((tile, tile), dtype=np.uint16, chunks=tile)
    step = tile * (1 - overlap)
    rng = np.random.default_rng(seed)
    views = []
    for iy in range(ny):
        for ix in range(nx):
            a = affine_from_translation([iy * step, ix * step])
            if rotation:
                c = [tile / 2, tile / 2]
                a = compose_affines(a, affine_from_rotation(rng.normal(0, rotation), center=c))
            views.append(view_from_array(data, spacing=1.0, affine=a))
    return views


def time_build(views, repeats=3):
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        g = build_overlap_graph(views, "stage")
        times.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
    return min(times), min(cpu), g


def main():
    rows = []
    for n, rot in [(100, 0.0), (100, 0.01), (10, 0.0)]:
        t0 = time.perf_counter()
        views = grid_views(n, n, rotation=rot)
        t_make = time.perf_counter() - t0
        t, c, g = time_build(views, repeats=3 if n * n <= 100 else 1 if rot else 2)
        expect = 2 * n * (n - 1) + 2 * (n - 1) ** 2
        rows.append((f"{n}x{n}", n * n, "rotated ~0.01 rad" if rot else "axis-aligned", g.number_of_edges(), expect, t, c, t_make))
        print(rows[-1], flush=True)
    lines = ["# Overlap graph benchmark (bench/bench_graph.py)", "",
             f"Machine: {platform.machine()}, {platform.python_version()}, `os.cpu_count()` = {__import__('os').cpu_count()} "
             f"(shared with other jobs; load average {__import__('os').getloadavg()[0]:.1f} at the end). Tiles 512x512 px, "
             "10 % overlap, lazy dask data; best of repeats. CPU time is this process's, a better measure on a busy machine.", "",
             "| grid | views | tiles | edges | expected edges (4- + diagonal) | build_overlap_graph wall [s] | build_overlap_graph CPU [s] | making the views [s] |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.2f} | {r[6]:.2f} | {r[7]:.1f} |")
    out = Path(__file__).with_name("RESULTS_graph.md")
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
