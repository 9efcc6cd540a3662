"Interoperability with multiview-stitcher: views and transforms pass both ways with no conversion."
import numpy as np
import pytest

ms = pytest.importorskip("multiview_stitcher")
from multiview_stitcher import spatial_image_utils as si_utils, msi_utils, param_utils  # noqa: E402

from multiview_reg.spatial import (view_from_array, get_spacing, get_origin, get_shape, get_affine, set_affine,
                                   get_spatial_dims, affine_from_translation, affine_from_rotation, as_view,
                                   view_corners, compose_affines)


def _ms_view(ndim):
    shape = (6, 20, 30)[-ndim:]
    dims = ("z", "y", "x")[-ndim:]
    scale = dict(zip(dims, (3.0, 0.5, 0.25)[-ndim:]))
    translation = dict(zip(dims, (-2.0, 10.0, 7.5)[-ndim:]))
    aff = compose_affines(affine_from_translation(np.arange(1, ndim + 1) * 4.0),
                          affine_from_rotation(0.2, axis=[1, 1, 0]) if ndim == 3 else affine_from_rotation(0.2))
    sim = si_utils.get_sim_from_array(np.random.default_rng(0).random(shape), dims=dims, scale=scale,
                                      translation=translation, affine=param_utils.affine_to_xaffine(aff),
                                      transform_key="stage")
    return sim, scale, translation, aff, shape


@pytest.mark.parametrize("ndim", [2, 3])
def test_read_multiview_stitcher_views(ndim):
    sim, scale, translation, aff, shape = _ms_view(ndim)
    msim = msi_utils.get_msim_from_sim(sim, scale_factors=[])
    for v in (sim, msim):
        assert get_spatial_dims(v) == ("z", "y", "x")[-ndim:]
        assert get_spacing(v) == scale
        assert get_origin(v) == translation
        assert list(get_shape(v).values()) == list(shape)
        np.testing.assert_allclose(get_affine(v, "stage"), aff, atol=1e-12)
    # multiview-stitcher's own getters agree with ours
    assert si_utils.get_spacing_from_sim(sim) == get_spacing(sim)
    assert si_utils.get_origin_from_sim(sim) == get_origin(sim)


@pytest.mark.parametrize("ndim", [2, 3])
def test_multiview_stitcher_reads_our_transforms(ndim):
    sim, *_ = _ms_view(ndim)
    new = affine_from_translation(np.linspace(1, 2, ndim))
    set_affine(sim, new, "registered", base_key="stage")
    theirs = si_utils.get_affine_from_sim(sim, "registered")
    theirs = np.asarray(theirs.squeeze().transpose("x_in", "x_out").values)
    np.testing.assert_allclose(theirs, new @ get_affine(sim, "stage"), atol=1e-12)
    # on a multiscale view as well, at every level
    msim = msi_utils.get_msim_from_sim(sim, scale_factors=[{d: 2 for d in get_spatial_dims(sim)}])
    set_affine(msim, new, "reg2", base_key="stage")
    for sk in msi_utils.get_sorted_scale_keys(msim):
        t = msi_utils.get_transform_from_msim(msim, "reg2").squeeze().transpose("x_in", "x_out").values
        np.testing.assert_allclose(t, new @ get_affine(sim, "stage"), atol=1e-12)
    # their lower level's origin follows the same pixel-centre convention as ours
    lvl1 = as_view(msim, 1)
    np.testing.assert_allclose(view_corners(lvl1, "stage"), view_corners(sim, "stage"), atol=1e-9)


def test_our_views_in_multiview_stitcher():
    v = view_from_array(np.zeros((5, 20, 30)), spacing=[2., .5, .5], origin=[1., 2., 3.],
                        affine=affine_from_translation([0., 10., 0.]))
    assert si_utils.get_spacing_from_sim(v) == get_spacing(v)
    assert si_utils.get_origin_from_sim(v) == get_origin(v)
    aff = si_utils.get_affine_from_sim(v, "stage")
    np.testing.assert_allclose(aff.transpose("x_in", "x_out").values, affine_from_translation([0., 10., 0.]))
    msim = msi_utils.get_msim_from_sim(si_utils.get_sim_from_array(v.values, dims=v.dims,
                                       scale=get_spacing(v), translation=get_origin(v), affine=aff,
                                       transform_key="stage"))
    np.testing.assert_allclose(get_affine(msim, "stage"), affine_from_translation([0., 10., 0.]))
