"Benchmark of multiview_reg.io (run by hand): metadata-only opening, chunks read for an overlap, round-trip times."
import sys, time, tempfile
from pathlib import Path
import numpy as np
from multiview_reg.data import tiled_dataset
from multiview_reg.io import read_tiles, write_tiles, read_views, write_ome_zarr, ChunkReadCounter
from multiview_reg.spatial import view_corners, as_view


def overlap_strip(left, right):
    lo = view_corners(right, "stage").min(0)
    return as_view(left).sel(x=slice(lo[-1], None))


def main(n_side=3, tile=(8, 128, 128)):
    views, _ = tiled_dataset(ndim=3, grid=(1, n_side, n_side), tile_shape=tile, overlap=0.1, seed=0)
    out = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t = time.perf_counter(); write_tiles(views, d / "tif", tile=(64, 64)); t_wt = time.perf_counter() - t
        t = time.perf_counter()
        for i, v in enumerate(views): write_ome_zarr(v, d / "zarr" / f"t{i:03d}.ome.zarr", chunks=64)
        t_wz = time.perf_counter() - t
        for kind, kw in (("TIFF", dict(positions=d / "tif" / "positions.csv", chunks=(1, 64, 64))), ("OME-Zarr", {})):
            src = d / ("tif" if kind == "TIFF" else "zarr")
            with ChunkReadCounter() as p:
                t = time.perf_counter(); back = read_views(src, **kw); t_open = time.perf_counter() - t
            n_open = p.n
            with ChunkReadCounter() as p:
                t = time.perf_counter(); s = overlap_strip(back[0], back[1]).values; t_strip = time.perf_counter() - t
            total = int(np.prod(as_view(back[0]).data.numblocks))  # dask chunks = file chunks here
            out.append(f"| {kind} | {len(views)} | {t_open:.2f} s ({1000 * t_open / len(views):.1f} ms/tile) | {n_open} | "
                       f"{s.shape} | {p.n} of {total} | {t_strip * 1000:.0f} ms |")
    print(f"write: TIFF {t_wt:.1f} s, OME-Zarr with pyramid {t_wz:.1f} s for {len(views)} tiles of {tile}")
    print("| format | tiles | open (metadata only) | chunks read on open | overlap strip | chunks read | strip time |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(out))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
