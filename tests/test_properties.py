"""Property tests (hypothesis, derandomized: the same examples on every run) of the public functions: affine
helpers, overlap geometry, resolvers and phase correlation against known ground truth."""
import networkx as nx
import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings, HealthCheck, strategies as st

from multiview_reg.spatial import (affine_from_linear, affine_from_rotation, affine_from_translation, affine_to_xarray,
                                   affine_from_xarray, apply_affine, compose_affines, invert_affine, view_from_array,
                                   view_extent)
from multiview_reg.graph import overlap_region
from multiview_reg.resolvers import resolve
from multiview_reg.data import synthetic_graph
from multiview_reg.metrics import correction_error
from multiview_reg.pairwise import register_pair
from multiview_reg.phase_correlation import phase_correlation_shift

FAST = settings(derandomize=True, max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
SLOWER = settings(derandomize=True, max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))

floats = lambda lo, hi: st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def affines(draw, ndim=None):
    "Random well-conditioned homogeneous affines (singular values in [0.5, 2])."
    d = draw(st.sampled_from([2, 3])) if ndim is None else ndim
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    u, _ = np.linalg.qr(rng.normal(size=(d, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    L = u @ np.diag(rng.uniform(0.5, 2.0, d)) @ v
    return affine_from_linear(L, rng.uniform(-50, 50, d))


# ---------------------------------------------------------------- affine helpers

@FAST
@given(st.data())
def test_affine_identities(data):
    a = data.draw(affines())
    d = a.shape[0] - 1
    b, c = data.draw(affines(d)), data.draw(affines(d))
    eye = np.eye(d + 1)
    np.testing.assert_allclose(compose_affines(a, invert_affine(a)), eye, atol=1e-10)
    np.testing.assert_allclose(compose_affines(invert_affine(a), a), eye, atol=1e-10)
    np.testing.assert_allclose(invert_affine(invert_affine(a)), a, atol=1e-9)
    np.testing.assert_allclose(compose_affines(a, b, c), compose_affines(compose_affines(a, b), c), atol=1e-9)
    np.testing.assert_allclose(invert_affine(compose_affines(a, b)), compose_affines(invert_affine(b), invert_affine(a)),
                               atol=1e-9)
    np.testing.assert_array_equal(compose_affines(a, eye), a)
    # apply_affine agrees with composition and inversion
    p = np.random.default_rng(0).uniform(-100, 100, (7, d))
    np.testing.assert_allclose(apply_affine(compose_affines(a, b), p), apply_affine(a, apply_affine(b, p)), atol=1e-8)
    np.testing.assert_allclose(apply_affine(invert_affine(a), apply_affine(a, p)), p, atol=1e-8)
    np.testing.assert_allclose(apply_affine(a, p), p @ a[:d, :d].T + a[:d, d], atol=1e-10)
    # translations add, labelled round trip is exact
    t1, t2 = p[0], p[1]
    np.testing.assert_allclose(compose_affines(affine_from_translation(t1), affine_from_translation(t2)),
                               affine_from_translation(t1 + t2), atol=1e-12)
    np.testing.assert_array_equal(affine_from_xarray(affine_to_xarray(a)), a)


@FAST
@given(angle=floats(-np.pi, np.pi), centre=st.tuples(floats(-50, 50), floats(-50, 50)))
def test_rotation_properties(angle, centre):
    r = affine_from_rotation(angle, center=np.array(centre)) if "center" in affine_from_rotation.__code__.co_varnames \
        else affine_from_rotation(angle)
    L = r[:2, :2]
    np.testing.assert_allclose(L @ L.T, np.eye(2), atol=1e-12)
    assert np.linalg.det(L) == pytest.approx(1.0)
    np.testing.assert_allclose(compose_affines(r, affine_from_rotation(-angle, **({"center": np.array(centre)} if
                               "center" in affine_from_rotation.__code__.co_varnames else {}))), np.eye(3), atol=1e-10)


# ---------------------------------------------------------------- overlap geometry

@st.composite
def view_pairs(draw, rotate=True):
    "Two 2D views with random shapes, spacings, origins and rigid placements, near enough to often overlap."
    out = []
    for _ in range(2):
        shape = (draw(st.integers(4, 40)), draw(st.integers(4, 40)))
        spacing = (draw(floats(0.3, 2.0)), draw(floats(0.3, 2.0)))
        origin = (draw(floats(-10, 10)), draw(floats(-10, 10)))
        angle = draw(floats(-0.6, 0.6)) if rotate else 0.0
        a = affine_from_translation([draw(floats(-30, 30)), draw(floats(-30, 30))]) @ affine_from_rotation(angle)
        out.append(view_from_array(np.zeros(shape, np.uint8), spacing=spacing, origin=origin, affine=a))
    return out


def _inside(view, world_pts, eps=1e-6):
    "Are world points inside the view's pixel-edge extent (after mapping back to its physical frame)?"
    lo, hi = view_extent(view)
    T = affine_from_xarray(view.attrs["transforms"]["stage"])
    p = apply_affine(invert_affine(T), world_pts)
    scale = 1 + np.abs(hi - lo).max()
    return np.all((p >= lo - eps * scale) & (p <= hi + eps * scale))


@FAST
@given(view_pairs())
def test_overlap_symmetric_and_contained(pair):
    a, b = pair
    r_ab, r_ba = overlap_region(a, b, "stage"), overlap_region(b, a, "stage")
    assert (r_ab is None) == (r_ba is None)
    if r_ab is None: return
    assert r_ab.measure > 0
    assert r_ab.measure == pytest.approx(r_ba.measure, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(r_ab.bbox[0], r_ba.bbox[0], atol=1e-9)
    np.testing.assert_allclose(r_ab.bbox[1], r_ba.bbox[1], atol=1e-9)
    assert _inside(a, r_ab.vertices) and _inside(b, r_ab.vertices)
    np.testing.assert_allclose(r_ab.bbox[0], r_ab.vertices.min(0), atol=1e-9)
    np.testing.assert_allclose(r_ab.bbox[1], r_ab.vertices.max(0), atol=1e-9)
    # the overlap is no larger than either view
    for v in (a, b):
        lo, hi = view_extent(v)
        assert r_ab.measure <= np.prod(hi - lo) * (1 + 1e-9)


@FAST
@given(view_pairs(rotate=False))
def test_overlap_axis_aligned_exact(pair):
    "Axis-aligned views: the overlap is the product of the interval overlaps (the ground truth)."
    a, b = pair
    boxes = []
    for v in (a, b):
        lo, hi = view_extent(v)
        t = affine_from_xarray(v.attrs["transforms"]["stage"])[:2, 2]
        boxes.append((lo + t, hi + t))
    ilo, ihi = np.maximum(boxes[0][0], boxes[1][0]), np.minimum(boxes[0][1], boxes[1][1])
    expected = np.prod(np.clip(ihi - ilo, 0, None))
    r = overlap_region(a, b, "stage")
    if expected <= 1e-9:
        assert r is None or r.measure <= 1e-6
    else:
        assert r is not None
        assert r.measure == pytest.approx(expected, rel=1e-9)
        np.testing.assert_allclose(r.bbox[0], ilo, atol=1e-9)
        np.testing.assert_allclose(r.bbox[1], ihi, atol=1e-9)


@FAST
@given(view_pairs(), floats(0.0, 5.0), floats(0.0, 5.0))
def test_overlap_monotonic_in_tolerance(pair, t1, t2):
    a, b = pair
    small, large = sorted([t1, t2])
    r1, r2 = overlap_region(a, b, "stage", tolerance=small), overlap_region(a, b, "stage", tolerance=large)
    if r1 is not None:
        assert r2 is not None
        assert r2.measure >= r1.measure * (1 - 1e-9)
        assert np.all(r2.bbox[0] <= r1.bbox[0] + 1e-9) and np.all(r2.bbox[1] >= r1.bbox[1] - 1e-9)


# ---------------------------------------------------------------- resolvers

@SLOWER
@given(seed=st.integers(0, 10**6), transform=st.sampled_from(["translation", "rigid", "affine"]),
       method=st.sampled_from(["global_optimization", "linear_two_pass", "shortest_paths"]),
       grid=st.sampled_from([(2, 2), (2, 3), (3, 3)]))
def test_resolver_reproduces_consistent_pairwise(seed, transform, method, grid):
    "Noise-free pairwise transforms: every edge satisfied exactly (G_m = G_f @ P) and the truth recovered."
    if method == "linear_two_pass" and transform == "affine": transform = "rigid"
    g, truth = synthetic_graph(grid=grid, transform=transform, jitter=3.0, rotation=0.01, shear=0.01, seed=seed)
    kw = {} if method == "shortest_paths" else {"transform": transform}
    try:
        params, info = resolve(g, method, **kw)
    except TypeError:  # a resolver without a `transform` option
        params, info = resolve(g, method)
    for u, v, d in g.edges(data=True):
        Gf, Gm = params[d["fixed"]], params[d["moving"]]
        np.testing.assert_allclose(Gm, Gf @ d["transform"], atol=1e-7)
    assert max(info["edge_residuals"].values()) < 1e-6
    assert correction_error(params, truth, g, gauge="affine" if transform == "affine" else "rigid")["max"] < 1e-6


def _relabel(g, perm):
    "The same graph with view i called perm[i]; edges re-oriented to the contract (fixed = smaller label)."
    h = nx.Graph()
    for n, d in g.nodes(data=True): h.add_node(perm[n], **d)
    for u, v, d in g.edges(data=True):
        d = dict(d); f, m = perm[d["fixed"]], perm[d["moving"]]
        if f > m: f, m, d["transform"] = m, f, np.linalg.inv(d["transform"])
        d["fixed"], d["moving"] = f, m
        h.add_edge(perm[u], perm[v], **d)
    return h


@SLOWER
@given(seed=st.integers(0, 10**6), perm_seed=st.integers(0, 10**6),
       method=st.sampled_from(["global_optimization", "linear_two_pass", "shortest_paths"]),
       noise=st.sampled_from([0.0, 0.3]))
def test_resolver_permutation_equivariant(seed, perm_seed, method, noise):
    "Relabelling the views permutes the result (the same physical view as reference)."
    grid = (2, 3); n = 6
    perm = np.random.default_rng(perm_seed).permutation(n).tolist()
    g0, _ = synthetic_graph(grid=grid, transform="translation", noise=noise, seed=seed)
    g1 = _relabel(g0, perm)
    p0, _ = resolve(g0, method, reference_view=0)
    p1, _ = resolve(g1, method, reference_view=perm[0])
    for i in range(n):
        np.testing.assert_allclose(p1[perm[i]], p0[i], atol=1e-8)


# ---------------------------------------------------------------- registration of a random shift

def _texture(seed, shape=(96, 96), sigma=2.0):
    t = ndi.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma)
    return (t - t.mean()) / t.std()


@SLOWER
@given(seed=st.integers(0, 10**6), sy=floats(-10, 10), sx=floats(-10, 10))
def test_phase_correlation_recovers_random_shift(seed, sy, sx):
    "moving index = fixed index + shift_px; sub-pixel shifts of a smooth random texture within 0.01 px."
    tex = _texture(seed)
    n, m = 16, 64
    yy, xx = np.mgrid[:m, :m].astype(float)
    fixed = tex[n:n + m, n:n + m]
    # moving[j] = tex(j + n - s): the feature at fixed index i is at moving index i + s
    moving = ndi.map_coordinates(tex, [yy + n - sy, xx + n - sx], order=5, mode="nearest")
    shift, ncc = phase_correlation_shift(fixed, moving)
    err = np.abs(np.asarray(shift) - [sy, sx]).max()
    assert err < 0.01, (shift, (sy, sx))
    assert ncc > 0.9


@SLOWER
@given(seed=st.integers(0, 10**6), sy=floats(-4, 4), sx=floats(-4, 4), spacing=floats(0.4, 2.0))
def test_register_pair_recovers_physical_shift(seed, sy, sx, spacing):
    "Two views of one texture whose stage positions are off by (sy, sx) px: the correction P undoes it (< 0.01 px)."
    tex = _texture(seed, (80, 140))
    a = view_from_array(tex[:, :80].copy(), spacing=spacing)
    b_data = tex[:, 60:].copy()
    # the true placement of b is x + 60 px; the stage says x + 60 px + error
    err_phys = np.array([sy, sx]) * spacing
    b = view_from_array(b_data, spacing=spacing,
                        affine=affine_from_translation(np.array([0, 60 * spacing]) + err_phys))
    res = register_pair(a, b, "stage")
    P = res["transform"]
    # P maps b's current world coordinates onto a's: it must remove the stage error (< 0.01 px)
    np.testing.assert_allclose(P[:2, :2], np.eye(2), atol=1e-9)
    got = P[:2, 2] / spacing
    assert np.abs(got + [sy, sx]).max() < 0.01, (got, (sy, sx))
    assert res["quality"] > 0.9
