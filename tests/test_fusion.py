"Fusion against ground truth: the analytic specimen, registered seams, gain steps, multiview-stitcher, resumed writes."
import warnings
from pathlib import Path
import numpy as np
import pytest
import dask
import zarr
from multiview_reg.spatial import (view_from_array, set_affine, affine_from_translation, affine_from_rotation,
                                   affine_from_linear, affine_from_scaling, get_spacing, get_origin, as_view)
from multiview_reg.data import random_blobs, render_blobs, tiled_dataset, procedural_dataset
from multiview_reg.metrics import ncc
from multiview_reg.fusion import fuse, fusion_grid, write_ome_zarr, register_weights_method
from multiview_reg.fusion_tools import fused_overlap_image


def grid_affine(f):
    "Output pixel index -> world matrix of a fused view."
    return affine_from_linear(np.diag(get_spacing(f, True)), get_origin(f, True))


def specimen_tiles(ndim=2, n=2, tile=96, step=80, angle=0.0, spacing=None, gains=None, noise=0.0, background=0.1, seed=0):
    "n^ndim (3D: 1 x n x n) noise-free float tiles of one blob specimen, true transforms under 'truth'."
    sp = np.ones(ndim) if spacing is None else np.asarray(spacing, float)
    tshape = (tile,) * ndim if ndim == 2 else (24, tile, tile)
    size = np.array(tshape) * sp
    hi = np.array([n * step + tile] * ndim, float) * sp + 20
    if ndim == 3: hi[0] = size[0] + 10  # one layer of tiles: the specimen need not be deeper
    blobs = random_blobs(-np.full(ndim, 20.0), hi, sigmas=(2.0, 4.0), density=0.3 if ndim == 2 else 0.1, seed=seed)
    rng = np.random.default_rng(seed)
    views, k = [], 0
    idx = [(iy, ix) for iy in range(n) for ix in range(n)]
    for iy, ix in idx:
        off = np.array([iy * step * sp[-2] + 0.37 * iy, ix * step * sp[-1] + 0.61 * ix])
        if ndim == 3: off = np.r_[0.3, off]
        rot = affine_from_rotation(angle * (1 + k), center=size / 2) if ndim == 2 else \
            affine_from_rotation(angle * (1 + k), axis=(1, 0, 0), center=size / 2)
        a = affine_from_translation(off) @ rot
        img = render_blobs(blobs, tshape, a @ affine_from_scaling(sp)) + background
        img = img * (1 if gains is None else gains[k]) + rng.normal(0, noise, img.shape)
        views.append(view_from_array(img.astype(np.float32), spacing=sp, affine=a, transform_key="truth"))
        k += 1
    return views, blobs


def expected_on(f, blobs, background=0.1):
    return render_blobs(blobs, f.shape, grid_affine(f)) + background


@pytest.mark.parametrize("ndim,angle,order", [(2, 0.01, 3), (2, 0.0, 3), (3, 0.0, 3), (2, 0.01, 1),
                                               pytest.param(3, 0.01, 3, marks=pytest.mark.slow)])  # rotated 3D: slow to render
def test_fused_matches_specimen(ndim, angle, order):
    "Noise-free views fused with their true transforms reproduce the specimen rendered on the output grid."
    views, blobs = specimen_tiles(ndim=ndim, angle=angle, spacing=None if ndim == 2 else (2.0, 1.0, 1.0))
    g = fusion_grid(views, "truth", box="intersection" if ndim == 3 else "union")
    lo = np.array(list(g["origin"].values())); n = np.array(list(g["shape"].values()))
    box = (lo + 6, lo + n * np.array(list(g["spacing"].values())) - 6) if ndim == 2 else "intersection"
    f = fuse(views, "truth", order=order, box=box).compute()
    score = ncc(f.values, expected_on(f, blobs))
    assert score >= (0.999 if order == 3 else 0.995), score


def test_nan_pixels_carry_no_weight():
    "A NaN patch inside an overlap is filled by the other view: no NaN, and the specimen is still matched."
    views, blobs = specimen_tiles()
    views[0].values[40:60, 84:90] = np.nan  # inside the overlap with tile 1 (world x 80.6..96)
    f = fuse(views, "truth", order=1, box=((6, 6), (170, 170)), dtype=np.float32, fill_value=np.nan).compute()
    assert not np.isnan(f.values).any()
    assert ncc(f.values, expected_on(f, blobs)) >= 0.995


def test_blending_removes_gain_step():
    "Tiles differing in gain by 20 %: a plain average leaves steps at tile borders, blending removes them."
    views, blobs = specimen_tiles(n=2, gains=[1.0, 1.2, 1.0, 1.2])
    box = ((10, 6), (60, 170))  # one row of tiles: tile 0 (gain 1) then tile 1 (gain 1.2), overlap at x 80..96
    def border_contrast(f):
        "Largest jump of the gain profile across a tile border: mean of 3 columns after minus 3 before."
        r = f.values.mean(0) / expected_on(f, blobs).mean(0)  # column profile of the gain seen in the fused image
        b = [int(np.searchsorted(f.x.values, e, side="right")) for e in (80.61 - 0.5, 95.5)]  # tile 1's left, tile 0's right edge
        return max(abs(r[i:i + 3].mean() - r[i - 3:i].mean()) for i in b)
    plain = fuse(views, "truth", weights="uniform", box=box, dtype=np.float32).compute()
    blended = fuse(views, "truth", box=box, blending_width=16, dtype=np.float32).compute()
    before, after = border_contrast(plain), border_contrast(blended)
    assert before > 0.08, before  # two steps of ~0.1 (1 -> 1.1 -> 1.2)
    assert after < before / 5, (before, after)
    r = blended.values.mean(0) / expected_on(blended, blobs).mean(0)
    assert abs(r[:20].mean() - 1.0) < 0.01 and abs(r[-20:].mean() - 1.2) < 0.01  # each side keeps its own gain


def seam_ncc(views, key, i, j):
    "NCC of two views resampled on their common box (the seam a fusion shows)."
    los = fused_overlap_image(views, key, i, j, weights="uniform")  # fixes the box; then each view alone on it
    box = (get_origin(los, True) - 0.5 * get_spacing(los, True), get_origin(los, True) + (np.array(los.shape) - 0.5) * get_spacing(los, True))
    a = fuse([views[i]], key, box=box, dtype=np.float32, fill_value=np.nan).values
    b = fuse([views[j]], key, box=box, dtype=np.float32, fill_value=np.nan).values
    ok = ~np.isnan(a) & ~np.isnan(b)
    return ncc(a, b, ok)


def test_no_doubled_structures_after_registration():
    "With registered transforms the overlapping views agree in their overlap (seam NCC), unlike the stage positions."
    from multiview_reg.register import register
    views, truth = tiled_dataset(ndim=2, grid=(2, 3), tile_shape=(192, 192), jitter=5, seed=2)
    register(views, "stage", new_transform_key="registered", progress=False)
    pairs = [(0, 1), (1, 2), (0, 3), (1, 4), (4, 5)]
    before = [seam_ncc(views, "stage", i, j) for i, j in pairs]
    after = [seam_ncc(views, "registered", i, j) for i, j in pairs]
    assert min(after) > 0.95, after
    assert max(before) < 0.8, before


def _mvs_fuse(views, grid, order):
    from multiview_stitcher import fusion as mvf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = mvf.fuse(views, transform_key="truth", output_stack_properties=grid, interpolation_order=order,
                     blending_widths={d: 10 * grid["spacing"][d] for d in grid["spacing"]})
        return np.asarray(f.data.compute(scheduler="threads")).squeeze()


@pytest.mark.parametrize("ndim,order", [(2, 1), (2, 3), (3, 1)])
def test_agrees_with_multiview_stitcher(ndim, order):
    "Same views, transforms, grid, order and blending: multiview-stitcher's fuse and ours agree away from the border."
    pytest.importorskip("multiview_stitcher")
    views, _ = specimen_tiles(ndim=ndim, angle=0.01, noise=0.02, spacing=None if ndim == 2 else (2.0, 1.0, 1.0))
    g = fusion_grid(views, "truth")
    ours = fuse(views, "truth", order=order, origin=g["origin"], shape=g["shape"]).values
    theirs = _mvs_fuse(views, g, order)
    assert ours.shape == theirs.shape
    m = tuple(slice(3, s - 3) if s < 40 else slice(12, s - 12) for s in ours.shape)
    assert ncc(ours[m], theirs[m]) >= 0.999


def test_time_points_channels_and_time_resolved_transforms():
    "t and c dims are kept; a time-resolved transform moves the view at each time point."
    blobs = random_blobs((-10, -10), (120, 200), sigmas=(2.0, 4.0), density=0.3, seed=4)
    shifts = [np.array([0.0, 0.0]), np.array([3.5, -2.25])]  # world position of tile 1 moves between t=0 and t=1
    views = []
    for k, base in enumerate([(0.0, 0.0), (0.0, 80.0)]):
        affs = [affine_from_translation(np.array(base) + (s if k == 1 else 0)) for s in shifts]
        frames = [render_blobs(blobs, (96, 96), a) for a in affs]
        data = np.stack([np.stack([fr, 2 * fr]) for fr in frames]).astype(np.float32)  # (t, c, y, x)
        v = view_from_array(data, dims=("t", "c", "y", "x"), c_coords=["a", "b"], transform_key="truth", affine=np.stack(affs))
        views.append(v)
    f = fuse(views, "truth", order=1, box=((6, 6), (90, 170)))
    assert f.dims == ("t", "c", "y", "x") and list(f.coords["c"].values) == ["a", "b"]
    exp = render_blobs(blobs, f.shape[2:], grid_affine(f))
    for t in range(2):
        assert ncc(f.isel(t=t, c=0).values, exp) >= 0.995
        np.testing.assert_allclose(f.isel(t=t, c=1).values, 2 * f.isel(t=t, c=0).values, rtol=1e-5, atol=1e-5)


def test_multiscale_views_read_the_matching_level_and_only_needed_chunks():
    "A fusion at 4x coarser spacing reads pyramid level 2 only, and a small box only the chunks around it."
    reads = []
    views, truth = procedural_dataset(grid=(2, 2), tile_shape=(256, 256), chunks=(64, 64), n_levels=4, noise=0.0,
                                      on_chunk=lambda i, lvl, sl: reads.append((i, lvl)))
    for v, a in zip(views, truth): set_affine(v, a, "truth")
    f = fuse(views, "truth", spacing=4.0)
    f.compute()
    assert {lvl for _, lvl in reads} == {2}
    assert len(reads) == 4 * 1  # level 2 of a 256^2 tile is one 64^2 chunk
    reads.clear()
    fuse(views, "truth", box=((10, 10), (40, 40))).compute()  # level 0, a corner of tile 0 only
    assert {i for i, _ in reads} == {0} and {lvl for _, lvl in reads} == {0} and len(reads) == 1


def test_content_based_prefers_the_sharp_view():
    "Two views of one region, one blurred: content-based weights follow the sharp one (Preibisch et al. 2008)."
    from scipy import ndimage
    blobs = random_blobs((-10, -10), (110, 110), sigmas=(1.5,), density=0.5, seed=5)
    sharp = render_blobs(blobs, (96, 96), np.eye(3)).astype(np.float32)
    blurred = ndimage.gaussian_filter(sharp, 3)
    views = [view_from_array(x, transform_key="truth") for x in (sharp, blurred)]
    box = ((11.5, 11.5), (83.5, 83.5))  # pixel edges: output pixels on the views' pixels 12..83
    avg = fuse(views, "truth", box=box, dtype=np.float32).values
    cb = fuse(views, "truth", box=box, weights="content_based", dtype=np.float32).values
    ref = sharp[12:84, 12:84]
    assert 1 - ncc(cb, ref) < (1 - ncc(avg, ref)) / 10 and ncc(cb, ref) > 0.995


def test_maximum_and_custom_weights():
    "Maximum fusion is the largest single-view value; a custom weights function is honoured."
    views, _ = specimen_tiles(gains=[1.0, 2.0, 1.0, 2.0])
    box = ((10, 6), (60, 170))  # tiles 0 and 1 only
    single = [fuse([v], "truth", box=box, dtype=np.float32, fill_value=np.nan).values for v in views[:2]]
    mx = fuse(views, "truth", fusion="maximum", box=box, dtype=np.float32).values
    np.testing.assert_allclose(mx, np.fmax(*single), rtol=1e-6)
    @register_weights_method("left_only_test", overwrite=True)
    def left_only(values, blend, *, spacing):
        w = np.zeros_like(blend); w[0] = blend[0] > 0; return w + 1e-9 * (blend > 0)
    f = fuse(views, "truth", weights="left_only_test", box=box, dtype=np.float32).values
    both = ~np.isnan(single[0]) & ~np.isnan(single[1])
    assert both.sum() > 500
    np.testing.assert_allclose(f[both], single[0][both], rtol=1e-5)  # where both tiles exist only tile 0 counts


def test_bad_input():
    views, _ = specimen_tiles()
    with pytest.raises(ValueError, match="order: expected an interpolation order"): fuse(views, "truth", order=7)
    with pytest.raises(ValueError, match="weights: unknown weights method 'wrong'"): fuse(views, "truth", weights="wrong")
    with pytest.raises(TypeError, match="weights_kwargs: .* takes no argument"): fuse(views, "truth", weights_kwargs={"sigma": 1})
    with pytest.raises(ValueError, match="ramp: expected one of"): fuse(views, "truth", ramp="gauss")
    with pytest.raises(KeyError, match="nope"): fuse(views, "nope")
    with pytest.raises(TypeError, match="views: expected a list"): fuse(views[0], "truth")
    with pytest.raises(ValueError, match="box: the views have no common intersection"):
        fuse([views[0], view_from_array(np.zeros((8, 8), np.float32), affine=affine_from_translation((500, 0)), transform_key="truth")],
             "truth", box="intersection")
    with pytest.raises(TypeError, match="image: expected a view"): write_ome_zarr(np.zeros((4, 4)), "/tmp/x.zarr")


def _levels(p):
    return [zarr.open_array(str(p / str(i)), mode="r")[:] for i in range(len([q for q in p.iterdir() if q.name.isdigit()]))]


def test_write_read_by_multiview_stitcher_and_plain_zarr(tmp_path):
    "The OME-Zarr is read back by multiview-stitcher's reader and by plain zarr with the same pixels and placement."
    pytest.importorskip("multiview_stitcher")
    from multiview_stitcher import ngff_utils
    views, _ = specimen_tiles(ndim=3, spacing=(2.0, 1.0, 1.0))
    f = fuse(views, "truth", chunks=(16, 64, 64))
    p = write_ome_zarr(f, tmp_path / "f.ome.zarr", min_size=16, progress=False)
    sim = ngff_utils.read_sim_from_ome_zarr(str(p))
    np.testing.assert_array_equal(np.asarray(sim.data).squeeze(), f.values)
    for d in "zyx":
        assert np.allclose(sim.coords[d].values, f.coords[d].values)
    s1 = ngff_utils.read_sim_from_ome_zarr(str(p), resolution_level=1)
    assert np.allclose(float(s1.coords["x"][1] - s1.coords["x"][0]), 2 * float(f.coords["x"][1] - f.coords["x"][0]))
    np.testing.assert_array_equal(zarr.open_array(str(p / "0"), mode="r")[:], f.values)


def test_interrupted_write_resumes_to_the_same_result(tmp_path):
    "Interrupt a threaded write after some chunks, resume: every level equals an uninterrupted write."
    views, _ = specimen_tiles(ndim=3, spacing=(2.0, 1.0, 1.0))
    f = fuse(views, "truth", chunks=(8, 32, 32))
    ref = write_ome_zarr(f, tmp_path / "ref.ome.zarr", min_size=16, progress=False)
    count = [0]
    class Stop(Exception): pass
    def stop(marker):
        count[0] += 1
        if count[0] >= 7: raise Stop()
    p = tmp_path / "int.ome.zarr"
    with pytest.raises(Stop): write_ome_zarr(f, p, min_size=16, progress=False, on_block=stop)
    n_done = len(list((p / ".multiview_reg_done" / "0").iterdir()))
    assert 7 <= n_done < zarr.open_array(str(p / "0"), mode="r").nchunks
    write_ome_zarr(f, p, min_size=16, progress=False)
    for a, b in zip(_levels(p), _levels(ref)): np.testing.assert_array_equal(a, b)
    assert not (p / ".multiview_reg_done").exists()
    assert zarr.open_group(str(p), mode="r").attrs["multiview_reg"]["fusion_write"]["complete"]


@pytest.mark.slow
def test_write_on_a_local_cluster(tmp_path):
    "Two worker processes write the same image as the threaded scheduler."
    distributed = pytest.importorskip("distributed")
    views, _ = specimen_tiles(ndim=3, spacing=(2.0, 1.0, 1.0))
    f = fuse(views, "truth", chunks=(8, 32, 32))
    ref = write_ome_zarr(f, tmp_path / "ref.ome.zarr", min_size=16, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl):
        p = write_ome_zarr(f, tmp_path / "cl.ome.zarr", min_size=16, progress=False)
    for a, b in zip(_levels(p), _levels(ref)): np.testing.assert_array_equal(a, b)
