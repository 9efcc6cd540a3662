"""multiview-stitcher users feel at home (issue 17): each reproducible defect a user of its API hit, as a test of ours.

The peer's own tests run through tests/test_multiview_stitcher_suite.py (slow); these are the small, direct versions.
"""
import numpy as np
import pytest
from scipy import ndimage

from multiview_reg.core import canonical_transform_types
from multiview_reg.data import rotated_pair, tiled_dataset
from multiview_reg.metrics import pairwise_error, registration_error
from multiview_reg.pairwise import NotEnoughOverlapError, extract_overlap_pair, register_pair
from multiview_reg.register import register
from multiview_reg.spatial import view_from_array, affine_from_translation


def test_transform_types_in_the_peers_spelling():
    "Item 1: ['Translation', 'Rigid'] (multiview-stitcher's docs) is accepted and recovers a known rotation."
    test = canonical_transform_types(["Translation", "Rigid", "Similarity", "Affine"])
    assert test == ("translation", "rigid", "similarity", "affine")
    pv, truth = rotated_pair(2, 15.0, where="pixels")
    res = register_pair(pv[0], pv[1], "stage", method="sitk", transform_types=["Translation", "Rigid"])
    assert pairwise_error(pv, res, truth, "stage") < 0.1


def test_quality_threshold_minus_one_keeps_every_link():
    "Item 2: post_registration_quality_threshold=-1 (the peer's 'keep every link') is accepted; the result is right."
    views, truth = tiled_dataset(2, grid=(2, 2), tile_shape=(96, 96), overlap=0.3, seed=3)
    res = register(views, "stage", new_transform_key="reg", post_registration_do_quality_filter=True,
                   post_registration_quality_threshold=-1, return_dict=True, progress=False)
    st = res.link_status[0]
    assert not any("below post_registration_quality_threshold" in s["reason"] for s in st.values())
    assert registration_error(views, "reg", truth)["max_px"] < 0.5
    with pytest.raises(ValueError, match="post_registration_quality_threshold: expected a number <= 1"):
        register(views, "stage", post_registration_quality_threshold=1.5, progress=False)


def _single_plane_tiles(shift_x=3.0):
    "Two single-plane 3D tiles (z of length one) overlapping in x; the second one is misplaced by `shift_x` px."
    rng = np.random.default_rng(0)
    im = ndimage.gaussian_filter(rng.random((100, 140)), 1.5).astype(np.float32)
    out = []
    for x0, err in ((0, 0.0), (60, shift_x)):
        out.append(view_from_array(im[None, :, x0:x0 + 80], dims=("z", "y", "x"),
                                   affine=affine_from_translation([3.0, 0.0, x0 + err]), transform_key="stage"))
    return out


def test_single_plane_3d_binning_names_z():
    "Item 6: registration_binning={'z': 1, 'y': 1, 'x': 1} on single-plane 3D views works and finds the known shift."
    views = _single_plane_tiles(3.0)
    p = register(views, "stage", registration_binning={"z": 1, "y": 1, "x": 1}, progress=False)
    rel = (np.asarray(p[1]) - np.asarray(p[0]))[2, 3]  # x translation of view 1 relative to view 0
    assert abs(rel - (-3.0)) < 0.1
    assert np.allclose(np.asarray(p[1])[0], [1, 0, 0, 0])  # z untouched


def test_no_overlap_raises_not_enough_overlap():
    "Item 8: no overlap raises NotEnoughOverlapError, a ValueError (old `except ValueError` code keeps working)."
    a = view_from_array(np.zeros((20, 20)), transform_key="stage")
    b = view_from_array(np.zeros((20, 20)), affine=affine_from_translation([0.0, 100.0]), transform_key="stage")
    with pytest.raises(NotEnoughOverlapError, match="do not overlap"):
        extract_overlap_pair(a, b, "stage")
    assert issubclass(NotEnoughOverlapError, ValueError)


def _timed_tiles(shift_x=3.0):
    "Two 2D tiles with a 't' dim of length one, the second one misplaced by `shift_x` px in x."
    rng = np.random.default_rng(1)
    im = ndimage.gaussian_filter(rng.random((100, 140)), 1.5).astype(np.float32)
    return [view_from_array(im[None, :, x0:x0 + 80], dims=("t", "y", "x"), t_coords=[0],
                            affine=affine_from_translation([0.0, x0 + err]), transform_key="stage")
            for x0, err in ((0, 0.0), (60, shift_x))]


def test_single_time_point_keeps_t():
    "Item 3: views with a t dim of length one get params with ('t', 'x_in', 'x_out'); p.sel(t=0) works."
    views = _timed_tiles(3.0)
    res = register(views, "stage", return_dict=True, progress=False)
    for p in (res["params"], register(_timed_tiles(3.0), "stage", progress=False)):
        assert p[0].dims == ("t", "x_in", "x_out")
        rel = (p[1] - p[0]).sel(t=0, x_in="x", x_out="1").item()
        assert abs(rel - (-3.0)) < 0.1


def test_returned_graph_scores_with_the_peers_metrics():
    "Item 4: to_dict(peer_edges=True) gives the peer's edge convention: its tile_pair_image_metrics scores our links NCC ~1."
    msv = pytest.importorskip("multiview_stitcher")
    from multiview_stitcher import metrics, msi_utils, sample_data
    sims = sample_data.generate_tiled_dataset(ndim=2, N_c=1, N_t=1, tile_size=15, tiles_x=2, tiles_y=1, overlap=10,
                                              zoom=6, shift_scale=0.0, drift_scale=0.0, transform_key="affine_metadata")
    msims = [msi_utils.get_msim_from_sim(s, scale_factors=[]) for s in sims]
    res = register(msims, "affine_metadata", reg_channel_index=0, return_dict=True, progress=False)
    g = res.to_dict(peer_edges=True)["pairwise_registration"]["graph"]
    out = metrics.tile_pair_image_metrics(msims, base_transform_key="affine_metadata", pairs_graph=g,
                                          metric_funcs={"ncc": metrics.normalized_cross_correlation})
    nccs = [m["transform"]["ncc"] for m in out["pairs"].values()]
    assert len(nccs) >= 1 and min(nccs) > 0.95, nccs
    back = type(res).from_dict(dict(res.to_dict(peer_edges=True), transform_key="affine_metadata"))  # ours again
    e = next(iter(res.graphs[0].edges))
    assert np.allclose(back.graphs[0].edges[e]["transform"], res.graphs[0].edges[e]["transform"])


def test_point_functions_in_the_peers_keyword_only_form():
    "Item 7: `f(*, fixed_points, moving_points)` (no images, world points in, world transform out) registers a known error."
    from multiview_reg.spatial import set_points
    rng = np.random.default_rng(2)
    beads = np.c_[rng.uniform(5, 35, 12), rng.uniform(25, 37, 12)]  # world positions, inside the overlap
    err = np.array([0.0, 2.5])  # the moving view's stage position is off by this
    im = ndimage.gaussian_filter(rng.random((40, 60)), 1.5).astype(np.float32)
    a = view_from_array(im[:, :40], transform_key="stage")
    b = view_from_array(im[:, 20:60], affine=affine_from_translation([0.0, 20.0] + err), transform_key="stage")
    set_points(a, beads); set_points(b, beads - [0.0, 20.0])
    seen = {}
    def peer_style(*, fixed_points, moving_points):
        seen["fixed"], seen["moving"] = fixed_points, moving_points
        return {"affine_matrix": affine_from_translation(moving_points.mean(0) - fixed_points.mean(0)), "quality": 1.0}
    p = register([a, b], "stage", pairwise_reg_func=peer_style, points_key="beads", progress=False)
    assert np.allclose(seen["fixed"], beads) and np.allclose(seen["moving"], beads + err)  # world coordinates
    rel = np.asarray(p[1])[:2, 2] - np.asarray(p[0])[:2, 2]
    assert np.allclose(rel, -err, atol=1e-6)
