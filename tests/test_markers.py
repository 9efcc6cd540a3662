"Marker (bead) registration: point sets on views, detection accuracy, exact/noisy point matching, pairwise end to end."
import warnings
import numpy as np
import pytest
import dask.array as da
import xarray as xr
from scipy.spatial import cKDTree
from scipy import ndimage as ndi

from multiview_reg.spatial import (view_from_array, set_points, get_points, get_point_keys, build_pyramid, as_view,
                                   affine_from_translation, affine_from_rotation, affine_from_linear, apply_affine,
                                   get_affine, set_affine, compose_affines, fit_point_transform)
from multiview_reg.data import render_blobs, multiview_dataset
from multiview_reg.metrics import registration_error
from multiview_reg.markers import detect_beads, match_points, pairwise_markers, overlap_points, local_descriptors


# ---------------------------------------------------------------- point sets on views
def test_point_sets_survive_selection_pyramids_and_do_not_leak():
    v = view_from_array(np.zeros((2, 12, 16)), dims=("t", "y", "x"), spacing=[0.5, 0.25])
    pts = np.array([[1.0, 2.0], [3.0, 0.5]])
    set_points(v, pts)
    sel = v.isel(t=1, x=slice(0, 4))
    np.testing.assert_array_equal(get_points(sel), pts)
    set_points(sel, pts + 1)  # replaces on the selection only
    np.testing.assert_array_equal(get_points(v), pts)
    ms = build_pyramid(v.isel(t=0), min_size=4)
    for level in range(3):
        np.testing.assert_array_equal(get_points(as_view(ms, level)), pts)
    get_points(ms)[0, 0] = 99.0  # get_points returns a copy
    np.testing.assert_array_equal(get_points(ms), pts)
    with pytest.raises(KeyError, match="key: point set 'x' not found"):
        get_points(v, "x")
    with pytest.raises(ValueError, match=r"points: expected an \(n, 2\) array"):
        set_points(v, np.zeros((3, 3)))


# ---------------------------------------------------------------- detection
def _bead_phantom(shape, spacing, sigma, noise=20.0, seed=0, amplitude=(0.5, 1.0)):
    "Well-separated Gaussian beads at known sub-pixel positions (physical), rendered analytically, plus noise."
    rng = np.random.default_rng(seed)
    sp, ext = np.asarray(spacing, float), np.asarray(shape) * np.asarray(spacing, float)
    step, margin = 8 * sigma + 2 * sp.max(), 3 * sigma + 2 * sp.max()
    g = np.stack(np.meshgrid(*[np.arange(margin, e - margin, step) for e in ext], indexing="ij"), -1).reshape(-1, len(shape))
    centres = g + rng.uniform(-step / 5, step / 5, g.shape)
    blobs = {"centers": centres, "sigmas": np.full(len(g), float(sigma)), "amplitudes": rng.uniform(*amplitude, len(g))}
    img = 100 + 1000 * render_blobs(blobs, shape, affine_from_linear(np.diag(sp))) + rng.normal(0, noise, shape)
    return img.astype(np.float32), centres


def _score(found, centres, spacing, radius):
    d, j = cKDTree(found).query(centres)
    hit = d < radius
    err_px = np.linalg.norm((found[j[hit]] - centres[hit]) / np.asarray(spacing), axis=1)
    return hit.mean(), float(np.sqrt(np.mean(err_px ** 2))), len(found)


@pytest.mark.parametrize("shape,spacing,sigma,method", [
    ((160, 180), (0.5, 0.5), 1.0, "log"),
    ((160, 180), (0.5, 0.5), 1.0, "dog"),
    ((30, 64, 64), (2.0, 0.75, 0.75), 1.0, "log"),
    ((30, 64, 64), (2.0, 0.75, 0.75), 0.8, "log"),  # undersampled in z: sigma 0.4 px
    ((40, 56, 56), (1.0, 1.0, 1.0), 1.5, "dog"),
])
def test_detection_recall_and_localisation(shape, spacing, sigma, method):
    img, centres = _bead_phantom(shape, spacing, sigma, seed=len(shape))
    found = detect_beads(view_from_array(img, spacing=spacing), sigma=sigma, method=method)
    recall, err_px, n = _score(found, centres, spacing, sigma)
    assert recall > 0.95, recall
    assert err_px < 0.2, err_px
    assert n <= len(centres) * 1.05 + 1  # few false detections


def test_detection_is_chunk_invariant_and_lazy():
    img, centres = _bead_phantom((32, 64, 72), (1.5, 0.6, 0.6), 1.0, seed=5)
    whole = detect_beads(view_from_array(img, spacing=(1.5, 0.6, 0.6)), sigma=1.0)
    lazy = view_from_array(da.from_array(img, chunks=(16, 20, 24)), spacing=(1.5, 0.6, 0.6))
    chunked = detect_beads(lazy, sigma=1.0)
    assert len(chunked) == len(whole)
    key = lambda p: p[np.lexsort(p.T)]
    np.testing.assert_allclose(key(chunked), key(whole), atol=1e-6)
    assert _score(chunked, centres, (1.5, 0.6, 0.6), 1.0)[0] > 0.95


def test_detection_respects_origin_time_and_threshold():
    img, centres = _bead_phantom((120, 120), (0.5, 0.5), 1.0, seed=2)
    v = view_from_array(np.stack([np.full_like(img, 100), img]), dims=("t", "y", "x"), spacing=0.5, origin=[10., -5.])
    found = detect_beads(v, sigma=1.0, t=1)
    assert _score(found, centres + [10., -5.], (0.5, 0.5), 1.0)[:2] > (0.95, 0.0)
    assert len(detect_beads(v, sigma=1.0, t=0)) == 0  # flat frame: no beads (noise-free)
    with pytest.raises(ValueError, match="t: the view has 2 entries"):
        detect_beads(v, sigma=1.0)
    pts, resp = detect_beads(v, sigma=1.0, t=1, return_response=True)
    # response is about the bead amplitude (500..1000) above background
    assert 400 < np.median(resp) < 1100
    assert len(detect_beads(v, sigma=1.0, t=1, threshold=2000.0)) == 0
    assert len(detect_beads(v, sigma=1.0, t=1, max_beads=5)) == 5


# ---------------------------------------------------------------- matching
def _point_pair(A, nd, n=200, missing=0.2, outliers=0.3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    F = rng.uniform(0, 100, (n, nd))
    keep = rng.random(n) > missing
    M = apply_affine(A, F[keep]) + rng.normal(0, noise, (keep.sum(), nd))
    M = np.concatenate([M, rng.uniform(M.min(0), M.max(0), (int(outliers * len(M)), nd))])
    F = np.concatenate([F, rng.uniform(0, 100, (int(outliers * n), nd))])
    return F, M[rng.permutation(len(M))]


def _rotation(nd, deg, rng):
    return affine_from_rotation(np.deg2rad(deg)) if nd == 2 else affine_from_rotation(np.deg2rad(deg), axis=rng.normal(size=3))


def _truth(transform, nd, deg, seed):
    rng = np.random.default_rng(100 + seed)
    t = affine_from_translation(rng.uniform(-30, 30, nd))
    if transform == "translation": return t
    A = t @ _rotation(nd, deg, rng) if nd == 2 else t @ affine_from_rotation(np.deg2rad(deg), axis=rng.normal(size=3), center=[50.] * 3)
    if transform == "affine": A = A @ affine_from_linear(np.eye(nd) + rng.uniform(-0.06, 0.06, (nd, nd)))
    return A


@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("transform,deg", [("translation", 0), ("rigid", 15), ("rigid", 45), ("rigid", 90),
                                            ("rigid", -90), ("affine", 30), ("affine", 90)])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_recovery_with_outliers_and_missing_points(nd, transform, deg, seed):
    A = _truth(transform, nd, deg, seed)
    F, M = _point_pair(A, nd, seed=seed)
    res = match_points(F, M, transform)
    np.testing.assert_allclose(res["affine_matrix"], A, atol=1e-6)
    assert res["residual"] < 1e-6
    assert res["quality"] > 0.5
    # the inliers are true correspondences
    np.testing.assert_allclose(apply_affine(A, F[res["inliers"][:, 0]]), M[res["inliers"][:, 1]], atol=1e-6)


@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("transform,deg", [("translation", 0), ("rigid", 90), ("affine", 45)])
def test_noisy_points_residual_of_the_order_of_the_noise(nd, transform, deg):
    noise = 0.3  # per coordinate, on the moving points (pixel = physical unit here)
    A = _truth(transform, nd, deg, 7)
    F, M = _point_pair(A, nd, noise=noise, seed=7)
    res = match_points(F, M, transform)
    expected = noise * np.sqrt(nd)  # RMS length of the noise vectors
    assert 0.6 * expected < res["residual"] < 1.3 * expected, (res["residual"], expected)
    # the transform itself is accurate: RMS error over the point cloud far below the noise
    Fin = F[:200]
    err = np.sqrt(np.mean(np.sum((apply_affine(res["affine_matrix"], Fin) - apply_affine(A, Fin)) ** 2, 1)))
    assert err < noise / 2, err
    assert res["quality"] > 0.4


def test_icp_recovers_matches_and_ratio_test_rejects_ambiguity():
    A = _truth("rigid", 3, 60, 3)
    F, M = _point_pair(A, 3, missing=0.4, outliers=0.5, noise=0.1, seed=3)
    with_icp = match_points(F, M, "rigid", icp=True)
    no_icp = match_points(F, M, "rigid", icp=False)
    assert len(with_icp["inliers"]) >= len(no_icp["inliers"])
    np.testing.assert_allclose(with_icp["affine_matrix"], A, atol=0.05)
    # a perfectly regular lattice: every descriptor is ambiguous, so the ratio test leaves no candidates
    g = np.stack(np.meshgrid(*[np.arange(6.)] * 3, indexing="ij"), -1).reshape(-1, 3) * 10
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = match_points(g, g + 3.0, "translation")
    assert res["quality"] == 0.0 and any("consistent correspondences" in str(x.message) for x in w)


def test_unrelated_point_sets_fail_honestly():
    rng = np.random.default_rng(0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = match_points(rng.uniform(0, 100, (150, 3)), rng.uniform(0, 100, (150, 3)), "rigid")
    assert res["quality"] == 0.0
    assert w


@pytest.mark.parametrize("call,msg", [
    (lambda: match_points(np.zeros((4, 3)), np.zeros((4, 2))), "points_moving: has 2 coordinates"),
    (lambda: match_points(np.full((4, 3), np.nan), np.zeros((4, 3))), "points_fixed: coordinates must be finite"),
    (lambda: match_points(np.zeros((4, 3)), np.zeros((4, 3)), ratio=0), r"ratio: expected a value in \(0, 1\]"),
    (lambda: match_points(np.zeros((4, 3)), np.zeros((4, 3)), n_neighbors=1), "n_neighbors: expected at least 2"),
    (lambda: pairwise_markers(fixed_points=np.zeros((4, 3)), moving_points=np.zeros((4, 3)), initial_affine=np.eye(3)),
     r"initial_affine: expected a finite \(4, 4\)"),
    (lambda: pairwise_markers(), "fixed_data: give either point sets"),
])
def test_bad_input_is_a_clear_error(call, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        call()


# ---------------------------------------------------------------- pairwise
def test_pairwise_markers_contract_with_initial_affine():
    "The result maps fixed physical -> moving physical, whatever the initial guess (rotation-invariant matching)."
    rng = np.random.default_rng(4)
    F = rng.uniform(0, 80, (150, 3))
    M_true = affine_from_translation([3., -4., 8.]) @ affine_from_rotation(np.pi / 2, axis=[0, 1, 0], center=[40.] * 3)
    M = apply_affine(M_true, F)[rng.permutation(150)[:120]]
    for init in (np.eye(4), M_true @ affine_from_translation([2., 0., -1.]), affine_from_rotation(1.0, axis=[1, 0, 0])):
        res = pairwise_markers(fixed_points=F, moving_points=M, initial_affine=init, transform="rigid")
        np.testing.assert_allclose(res["affine_matrix"], M_true, atol=1e-6)
        assert 0 < res["quality"] <= 1


def test_pairwise_markers_detects_beads_from_image_data():
    img, centres = _bead_phantom((30, 60, 60), (1.0, 0.5, 0.5), 1.0, seed=9)
    shift = np.array([1.3, -2.1, 0.7])  # physical: moving content = fixed content + shift
    blobs_img = lambda c: (100 + 1000 * render_blobs({"centers": c, "sigmas": np.full(len(c), 1.0),
                                                      "amplitudes": np.ones(len(c))}, (30, 60, 60),
                                                     affine_from_linear(np.diag([1.0, 0.5, 0.5])))).astype(np.float32)
    fixed, moving = blobs_img(centres), blobs_img(centres + shift)
    res = pairwise_markers(fixed, moving, fixed_origin=[0, 0, 0], moving_origin=[0, 0, 0], fixed_spacing=[1, .5, .5],
                           moving_spacing=[1, .5, .5], transform="translation", detect_kwargs={"sigma": 1.0})
    np.testing.assert_allclose(res["affine_matrix"][:3, 3], shift, atol=0.05)


def _phase_correlation_error(views, truth):
    "Corner error (px) after registering view 1 to view 0 by phase correlation of the nominally resampled views."
    from skimage.registration import phase_cross_correlation
    f, m = views
    Tf, Tm = get_affine(f, "stage"), get_affine(m, "stage")
    sp = np.array([float(f.z[1] - f.z[0]), float(f.y[1] - f.y[0]), float(f.x[1] - f.x[0])])
    # moving resampled on the fixed grid with the nominal transforms: fixed index -> moving index
    idx_f = affine_from_linear(np.diag(sp))
    Mi = np.linalg.inv(affine_from_linear(np.diag(sp))) @ np.linalg.inv(Tm) @ Tf @ idx_f
    mov = ndi.affine_transform(np.asarray(m.values, float), Mi[:3, :3], Mi[:3, 3], output_shape=f.shape, order=1, cval=np.nan)
    valid = np.isfinite(mov)
    fix = np.where(valid, np.asarray(f.values, float), 0); mov = np.where(valid, mov, 0)
    shift_px = phase_cross_correlation(fix, mov, upsample_factor=10, normalization=None)[0]  # fixed ~ mov shifted
    # mov(x - s) ~ fix(x): the fixed content at index x is the moving content at x - s
    M = np.linalg.inv(Tm) @ Tf @ idx_f @ affine_from_translation(-shift_px) @ np.linalg.inv(idx_f)
    set_affine(f, Tf, "pc"); set_affine(m, Tf @ np.linalg.inv(M), "pc")
    return registration_error(views, "pc", truth)["max_px"]


def _edge_error(views, truth, key, edge):
    "Apply a register_edge result as transform `key` (fixed keeps its transform) and return the corner error in px."
    set_affine(views[edge["fixed"]], np.eye(4), key, base_key="stage")
    set_affine(views[edge["moving"]], edge["transform"], key, base_key="stage")
    return registration_error(views, key, truth)["max_px"]


@pytest.mark.slow
@pytest.mark.parametrize("angle,seed", [(60, 1), (90, 1), (90, 2)])
def test_end_to_end_rotated_views_markers_beat_phase_correlation(angle, seed):
    from multiview_reg.pairwise import register_edge, extract_overlap_pair
    views, truth = multiview_dataset(angles=(0, angle), n_beads=150, seed=seed)
    for v in views: set_points(v, detect_beads(v, sigma=0.8))
    Tf, Tm = (get_affine(v, "stage") for v in views)
    before = registration_error(views, "stage", truth)["max_px"]
    # 1. direct call with the views' point sets, prefiltered to the overlap
    fp, mp = overlap_points(views[0], views[1], "stage", tolerance=10.0)
    res = pairwise_markers(fixed_points=fp, moving_points=mp, initial_affine=np.linalg.inv(Tm) @ Tf)
    set_affine(views[0], Tf, "markers"); set_affine(views[1], Tf @ np.linalg.inv(res["affine_matrix"]), "markers")
    direct = registration_error(views, "markers", truth)["max_px"]
    # 2. through the pairwise registry: (a) moving points in the fixed view's frame (what register() passes),
    #    (b) moving points in the frame of the (resampled) moving crop
    fp2, mp_fixed = overlap_points(views[0], views[1], "stage", tolerance=10.0, frame="fixed")
    edge = register_edge(views, 0, 1, "stage", pairwise_reg_func="markers",
                         pairwise_reg_func_kwargs={"fixed_points": fp2, "moving_points": mp_fixed, "points_frame": "fixed"})
    via_registry = _edge_error(views, truth, "markers_edge", edge)
    op = extract_overlap_pair(views[0], views[1], "stage", max_pixels=2 ** 16)
    mp_crop = apply_affine(np.linalg.inv(op.moving_to_view), mp)
    edge_crop = register_edge(views, 0, 1, "stage", pairwise_reg_func="markers",
                              pairwise_reg_func_kwargs={"fixed_points": fp, "moving_points": mp_crop})
    assert abs(_edge_error(views, truth, "markers_edge_crop", edge_crop) - via_registry) < 1e-6
    # 3. through the registry, beads detected in the overlap crops
    edge_det = register_edge(views, 0, 1, "stage", pairwise_reg_func="markers",
                             pairwise_reg_func_kwargs={"detect_kwargs": {"sigma": 0.8}})
    via_crops = _edge_error(views, truth, "markers_crops", edge_det)
    # intensity-based phase correlation: the project's backend and a plain skimage one
    pc = _edge_error(views, truth, "pc", register_edge(views, 0, 1, "stage", pairwise_reg_func="phase_correlation"))
    pc_skimage = _phase_correlation_error(views, truth)
    print(f"angle {angle} seed {seed}: stage {before:.2f} px, phase correlation {pc:.2f} px (skimage {pc_skimage:.2f}), "
          f"markers {direct:.3f} px (registry {via_registry:.3f}, crops {via_crops:.3f}), "
          f"{len(res['inliers'])} inliers, quality {res['quality']:.2f}")
    assert direct < 1.0 and via_registry < 1.0 and via_crops < 1.0
    assert abs(via_registry - direct) < 0.05  # the same points, the same answer
    assert res["quality"] > 0.3
    # phase correlation recovers the shift but not the rotation error of rotated views
    assert pc > 1.0 and pc_skimage > 1.0
    assert direct < pc / 5


def test_register_with_markers_three_rotated_views():
    "register(..., pairwise_reg_func='markers', points_key='beads'): views 0/45/90 degrees apart, rigid resolution."
    from multiview_reg.register import register
    views, truth = multiview_dataset(angles=(0, 45, 90), view_shape=(24, 56, 56), n_beads=80, seed=4)
    for v in views: set_points(v, detect_beads(v, sigma=0.8))
    before = registration_error(views, "stage", truth)["max_px"]
    for prefilter in (True, False):
        key = f"markers_{prefilter}"
        register(views, "stage", new_transform_key=key, pairwise_reg_func="markers", points_key="beads",
                 prefilter_markers=prefilter, overlap_tolerance=5.0, groupwise_resolution_kwargs={"transform": "rigid"})
        after = registration_error(views, key, truth)["max_px"]
        print(f"register markers prefilter={prefilter}: {before:.2f} px -> {after:.3f} px")
        assert after < 0.5 and before > 2
