"""A thin adapter: multiview-stitcher's registration, graph and resolution calls routed to multiview_reg.

Used by tests/test_multiview_stitcher_suite.py to run the peer's own tests (from its installed wheel) against our
code: the peer's data generators and assertions stay, the calls that register, build/prune the overlap graph,
resolve and stabilise go to multiview_reg. Only names and data layouts are translated here (the peer's backend
functions -> our registered methods, our dicts -> the peer's xarray Datasets); behaviour is ours.
"""
from __future__ import annotations
import inspect
import numpy as np
import networkx as nx
import xarray as xr

from multiview_stitcher import registration as msv_registration, param_utils, msi_utils
from multiview_reg.register import register as mr_register, edge_residuals
from multiview_reg.graph import build_overlap_graph
from multiview_reg.pruning import prune
from multiview_reg.resolvers import resolve
from multiview_reg.pairwise import auto_binning
try: from multiview_reg.pairwise import NotEnoughOverlapError as _OurNotEnoughOverlap
except ImportError: _OurNotEnoughOverlap = ()  # older multiview_reg
from multiview_reg.spatial import affine_to_xarray, as_view, get_affine, get_point_keys, get_shape

# The peer's pairwise backends and ours (looked up by name at call time: the peer's functions stay untouched)
PEER_METHODS = {"phase_correlation_registration": "phase_correlation", "registration_ITKElastix": "elastix",
                "registration_ANTsPy": "ants", "registration_marker_based": "markers"}

# Originals, saved before any patching (parametrize lists of the peer's tests hold these objects)
ORIGINALS = {name: getattr(msv_registration, name) for name in PEER_METHODS}

def _method(func):
    "Our method for one of the peer's pairwise backends; any other callable (a user's function) passes through."
    for name, ours in PEER_METHODS.items():
        if func is ORIGINALS[name] or func is globals().get(name): return ours
    return func

def _mr(name):
    "Our pairwise function for a registered name."
    from multiview_reg.pairwise import get_pairwise_method, PAIRWISE_METHODS
    if name == "ants" and "ants" not in PAIRWISE_METHODS: import multiview_reg.ants_registration  # until a built-in
    return get_pairwise_method(name)

# --- pairwise backends called directly ---------------------------------------------------------------------------

def phase_correlation_registration(fixed_data, moving_data, **kwargs):
    return _mr("phase_correlation")(fixed_data, moving_data, **kwargs)

def registration_ITKElastix(fixed_data, moving_data, **kwargs):
    return _mr("elastix")(fixed_data, moving_data, **kwargs)

def registration_ANTsPy(fixed_data, moving_data, **kwargs):
    return _mr("ants")(fixed_data, moving_data, **kwargs)

# the peer's marker arguments and ours (same meaning, other spelling); fail_on_error has no counterpart (ours
# returns quality 0 on failure)
_MARKER_KWARGS = {"transform_type": "transform", "random_state": "seed"}

def registration_marker_based(fixed_data=None, moving_data=None, *, fail_on_error=None, **kwargs):
    kw = {_MARKER_KWARGS.get(k, k): v for k, v in kwargs.items()}
    return _mr("markers")(fixed_data, moving_data, **kw)

# --- register ----------------------------------------------------------------------------------------------------

def _points_key(msims, points_key, func):
    "The peer passes its default point set ('beads') only to point-aware functions of views that carry it."
    if points_key is None: return None
    f = _mr(func) if isinstance(func, str) else func
    try: params = inspect.signature(f).parameters
    except (TypeError, ValueError): return None
    if "fixed_points" not in params: return None
    return points_key if all(points_key in get_point_keys(m) for m in msims) else None

def register(msims, transform_key=None, points_key="beads", prefilter_markers=False, reg_channel_index=None,
             reg_channel=None, new_transform_key=None, registration_binning=None, reg_res_level=None,
             overlap_tolerance=0.0, pairwise_reg_func=None, pairwise_reg_func_kwargs=None,
             groupwise_resolution_method="global_optimization", groupwise_resolution_kwargs=None,
             pre_registration_pruning_method="alternating_pattern", pre_reg_pruning_method_kwargs=None,
             post_registration_do_quality_filter=False, post_registration_quality_threshold=0.2, plot_summary=False,
             pairs=None, scheduler=None, n_parallel_pairwise_regs=None, pairwise_executor=None, return_dict=False):
    "The peer's `registration.register` signature, run by `multiview_reg.register.register`."
    func = _method(pairwise_reg_func if pairwise_reg_func is not None else ORIGINALS["phase_correlation_registration"])
    if isinstance(func, str): _mr(func)
    try: return _register(msims, transform_key, func, points_key, prefilter_markers, reg_channel_index, reg_channel,
                          new_transform_key, registration_binning, reg_res_level, overlap_tolerance,
                          pairwise_reg_func_kwargs, groupwise_resolution_method, groupwise_resolution_kwargs,
                          pre_registration_pruning_method, pre_reg_pruning_method_kwargs,
                          post_registration_do_quality_filter, post_registration_quality_threshold, plot_summary, pairs,
                          n_parallel_pairwise_regs, return_dict)
    except _OurNotEnoughOverlap as e:  # the peer's users catch its own exception class
        from multiview_stitcher.mv_graph import NotEnoughOverlapError
        raise NotEnoughOverlapError(str(e)) from e

def _register(msims, transform_key, func, points_key, prefilter_markers, reg_channel_index, reg_channel,
              new_transform_key, registration_binning, reg_res_level, overlap_tolerance, pairwise_reg_func_kwargs,
              groupwise_resolution_method, groupwise_resolution_kwargs, pre_registration_pruning_method,
              pre_reg_pruning_method_kwargs, post_registration_do_quality_filter, post_registration_quality_threshold,
              plot_summary, pairs, n_parallel_pairwise_regs, return_dict):
    res = mr_register(msims, transform_key, new_transform_key=new_transform_key, reg_channel=reg_channel,
                       reg_channel_index=reg_channel_index, registration_binning=registration_binning,
                       reg_res_level=reg_res_level, overlap_tolerance=overlap_tolerance, pairwise_reg_func=func,
                       pairwise_reg_func_kwargs=pairwise_reg_func_kwargs,
                       groupwise_resolution_method=groupwise_resolution_method,
                       groupwise_resolution_kwargs=groupwise_resolution_kwargs,
                       pre_registration_pruning_method=pre_registration_pruning_method,
                       pre_reg_pruning_method_kwargs=pre_reg_pruning_method_kwargs,
                       post_registration_do_quality_filter=post_registration_do_quality_filter,
                       post_registration_quality_threshold=post_registration_quality_threshold,
                       plot_summary=plot_summary, pairs=pairs, n_parallel_pairwise_regs=n_parallel_pairwise_regs,
                       return_dict=return_dict, progress=False,
                       points_key=_points_key(msims, points_key, func), prefilter_markers=prefilter_markers)
    # the peer's dict layout: graph edges in its convention (world of fixed -> world of moving)
    return res.to_dict(peer_edges=True) if return_dict else res

def _edge_dataset(res, edge, tf, tm):
    "One registered edge as the peer's Dataset: transform (world of fixed -> world of moving), quality, bbox."
    m = np.asarray(edge["affine_matrix"])  # fixed physical -> moving physical (the pairwise contract)
    T = tm @ m @ np.linalg.inv(tf)
    lo, hi = (np.asarray(x, float) for x in edge["bbox"])
    return xr.Dataset({"transform": param_utils.affine_to_xaffine(T), "quality": xr.DataArray(float(edge["quality"])),
                       "bbox": xr.DataArray(np.stack([lo, hi]), dims=["point_index", "dim"])})

def register_pair_of_msims(msim1, msim2, transform_key, points_key="beads", prefilter_markers=False,
                           registration_binning=None, reg_res_level=None, overlap_tolerance=None,
                           pairwise_reg_func=None, pairwise_reg_func_kwargs=None):
    "The peer's pairwise call, run by our `register` on the two views (one edge, no pruning); the edge as a Dataset."
    func = _method(pairwise_reg_func if pairwise_reg_func is not None else ORIGINALS["phase_correlation_registration"])
    if isinstance(func, str): _mr(func)
    res = mr_register([msim1, msim2], transform_key, registration_binning=registration_binning,
                      reg_res_level=reg_res_level, overlap_tolerance=overlap_tolerance or 0.0, pairwise_reg_func=func,
                      pairwise_reg_func_kwargs=pairwise_reg_func_kwargs, pre_registration_pruning_method=None,
                      return_dict=True, progress=False, min_link_quality=None,
                      points_key=_points_key([msim1, msim2], points_key, func), prefilter_markers=prefilter_markers)
    g = res.graphs[0]
    tf, tm = (np.asarray(get_affine(as_view(m), transform_key)) for m in (msim1, msim2))
    return _edge_dataset(res, g.edges[0, 1], tf, tm)

def register_pair_of_msims_over_time(msim1, msim2, **kwargs):
    "`register_pair_of_msims` per time point, concatenated along t (as the peer does)."
    msim1, msim2 = msi_utils.ensure_dim(msim1, "t"), msi_utils.ensure_dim(msim2, "t")
    ts = msi_utils.get_sim_from_msim(msim1).coords["t"].values
    out = [register_pair_of_msims(msi_utils.multiscale_sel_coords(msim1, {"t": t}),
                                  msi_utils.multiscale_sel_coords(msim2, {"t": t}), **kwargs) for t in ts]
    return xr.concat(out, dim="t").assign_coords(t=ts)

def get_optimal_registration_binning(sim1, sim2, max_total_pixels_per_stack=None, overlap_tolerance=None):
    "Our automatic binning (`pairwise.auto_binning`, budget 2**21 pixels per crop) of the larger view."
    dims = [d for d in ("z", "y", "x") if d in sim1.dims]
    shape = np.maximum([sim1.sizes[d] for d in dims], [sim2.sizes[d] for d in dims])
    return dict(zip(dims, auto_binning(shape)))

def stabilize(msims, reg_channel_index=0, reg_res_level=None, sigma=2, transform_key=None, new_transform_key=None,
              n_parallel=None):
    "The peer's `registration.stabilize`, run by `multiview_reg.stabilize.stabilize`."
    from multiview_reg.stabilize import stabilize as mr_stabilize
    return mr_stabilize(msims, transform_key, reg_channel_index=reg_channel_index, reg_res_level=reg_res_level,
                        sigma=sigma, new_transform_key=new_transform_key, n_parallel=n_parallel)

# --- graph and resolution ----------------------------------------------------------------------------------------

def build_view_adjacency_graph_from_msims(msims, transform_key, overlap_tolerance=None, expand=False, pairs=None):
    "The overlap graph (`graph.build_overlap_graph`)."
    return build_overlap_graph(msims, transform_key, pairs=pairs, overlap_tolerance=overlap_tolerance or 0.0)

def prune_view_adjacency_graph(g, method=None, pruning_method_kwargs=None):
    "Pruning (`pruning.prune`)."
    return g if method is None else prune(g, method, **(pruning_method_kwargs or {}))

def _matrix(x):
    x = x.squeeze() if isinstance(x, xr.DataArray) else x
    if isinstance(x, xr.DataArray) and "x_in" in x.dims: x = x.transpose("x_in", "x_out")
    return np.asarray(x, float)

def groupwise_resolution(g_reg, method="global_optimization", reference_view=None, **kwargs):
    """`resolvers.resolve` on a graph with the peer's edges: transform T maps the world of the lower-index (fixed)
    view to that of the other; ours is the correction P = inv(T). Returns the peer's (params, info) layout."""
    g = nx.Graph()
    g.add_nodes_from(g_reg.nodes(data=True))
    for u, v, d in g_reg.edges(data=True):
        f, m = min(u, v), max(u, v)
        lo, hi = (np.asarray(x, float) for x in np.asarray(d["bbox"]))
        g.add_edge(u, v, **{**d, "fixed": f, "moving": m, "transform": np.linalg.inv(_matrix(d["transform"])),
                            "bbox": (lo, hi)})
    params, info = resolve(g, method, reference_view=reference_view, **kwargs)
    xparams = {n: param_utils.affine_to_xaffine(np.asarray(p)) for n, p in params.items()}
    return xparams, {"edge_residuals": {0: edge_residuals(g, params)},
                     "used_edges": {0: [tuple(sorted(e)) for e in info["used_edges"]]}, "metrics": info.get("metrics")}

# --- what is patched ---------------------------------------------------------------------------------------------

ROUTES = {
    "multiview_stitcher.registration": ["register", "register_pair_of_msims", "register_pair_of_msims_over_time",
                                        "get_optimal_registration_binning", "stabilize",
                                        "phase_correlation_registration", "registration_ITKElastix",
                                        "registration_ANTsPy", "registration_marker_based"],
    "multiview_stitcher.mv_graph": ["build_view_adjacency_graph_from_msims", "prune_view_adjacency_graph"],
    "multiview_stitcher.param_resolution": ["groupwise_resolution"],
}

def route(monkeypatch):
    "Patch the peer's modules so that the routed calls run multiview_reg (undone by monkeypatch after the test)."
    import importlib
    for mod, names in ROUTES.items():
        m = importlib.import_module(mod)
        for n in names: monkeypatch.setattr(m, n, globals()[n])
