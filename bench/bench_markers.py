"""Marker registration benchmarks (run by hand): `python bench/bench_markers.py`.

1. point matching: accuracy and time of `match_points` vs multiview-stitcher's `registration_marker_based`
   on synthetic point sets (rotations up to 90 deg, 20% missing, 30% outliers in both sets, noise);
2. bead detection: time and accuracy of `detect_beads` on a larger 3D bead volume, whole vs dask chunks.
"""
import time, warnings
import numpy as np
from scipy.spatial import cKDTree
import dask
from multiview_reg.spatial import affine_from_rotation, affine_from_translation, affine_from_linear, apply_affine, view_from_array
from multiview_reg.markers import match_points, detect_beads
from multiview_reg.data import render_blobs

dask.config.set(scheduler="threads")


def point_pair(A, nd, n, missing=0.2, outliers=0.3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    ext = 100 * (n / 200) ** (1 / nd)  # constant density
    F = rng.uniform(0, ext, (n, nd))
    keep = rng.random(n) > missing
    M = apply_affine(A, F[keep]) + rng.normal(0, noise, (keep.sum(), nd))
    M = np.concatenate([M, rng.uniform(M.min(0), M.max(0), (int(outliers * len(M)), nd))])
    F = np.concatenate([F, rng.uniform(0, ext, (int(outliers * n), nd))])
    return F, M[rng.permutation(len(M))]


def matrix_error(est, A, F):
    return float(np.sqrt(np.mean(np.sum((apply_affine(est, F) - apply_affine(A, F)) ** 2, 1))))


def bench_matching():
    from multiview_stitcher.registration import registration_marker_based
    rows = []
    for n in (200, 1000, 5000):
        for deg in (30, 90):
            for noise in (0.0, 0.3):
                A = affine_from_translation([5., -8., 12.]) @ affine_from_rotation(np.deg2rad(deg), axis=[1, 2, 3])
                F, M = point_pair(A, 3, n, noise=noise, seed=n + deg)
                t0 = time.perf_counter(); ours = match_points(F, M, "rigid"); t_ours = time.perf_counter() - t0
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    try:
                        theirs = registration_marker_based(F, M, "rigid", icp=True, fail_on_error=False)
                        e_theirs = matrix_error(np.asarray(theirs["affine_matrix"]), A, F[:n])
                    except Exception as e:  # report, do not hide
                        e_theirs = f"error: {type(e).__name__}"
                    t_theirs = time.perf_counter() - t0
                rows.append((n, deg, noise, matrix_error(ours["affine_matrix"], A, F[:n]), t_ours, e_theirs, t_theirs))
                print(rows[-1], flush=True)
    return rows


def bench_detection():
    rng = np.random.default_rng(0)
    shape, sp, sigma = (96, 384, 384), np.array([2.0, 0.5, 0.5]), 1.0
    ext = np.array(shape) * sp
    n = 3000
    centres = rng.uniform(3 * sp.max(), ext - 3 * sp.max(), (n, 3))
    d = cKDTree(centres).query(centres, k=2)[0][:, 1]
    centres = centres[d > 6 * sigma]  # well separated
    blobs = {"centers": centres, "sigmas": np.full(len(centres), sigma), "amplitudes": rng.uniform(0.5, 1, len(centres))}
    t0 = time.perf_counter()
    img = (100 + 1000 * render_blobs(blobs, shape, affine_from_linear(np.diag(sp))) + rng.normal(0, 20, shape)).astype(np.float32)
    print(f"rendered {shape} with {len(centres)} beads in {time.perf_counter() - t0:.1f} s", flush=True)
    out = []
    for chunks in (None, (48, 128, 128)):
        t0 = time.perf_counter()
        found = detect_beads(view_from_array(img, spacing=sp), sigma=sigma, chunks=chunks)
        dt = time.perf_counter() - t0
        dd, j = cKDTree(found).query(centres)
        hit = dd < sigma
        err = np.sqrt(np.mean(np.sum(((found[j[hit]] - centres[hit]) / sp) ** 2, 1)))
        out.append((chunks, len(centres), len(found), hit.mean(), err, dt))
        print(out[-1], flush=True)
    return out


if __name__ == "__main__":
    bench_matching()
    bench_detection()
