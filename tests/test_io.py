"Round trips, corrupt inputs and lazy reading of multiview_reg.io (TIFF tiles, OME-Zarr, transforms files)."
import json
import re
import pickle

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from multiview_reg.data import tiled_dataset, registration_error
from multiview_reg.io import (read_tiles, write_tiles, read_ome_zarr, write_ome_zarr, write_transforms_to_ome_zarr,
                              save_transforms, load_transforms, apply_transforms, read_views, ChunkReadCounter,
                              SIDECAR_NAME)
from multiview_reg.spatial import (get_spacing, get_origin, get_affine, set_affine, as_view, is_multiscale,
                                   multiscale_levels, affine_from_translation, affine_from_rotation, view_from_array,
                                   view_corners)

DATASETS = {2: dict(ndim=2, grid=(2, 3), tile_shape=(64, 80), spacing=0.65, seed=11),
            3: dict(ndim=3, grid=(1, 2, 2), tile_shape=(8, 48, 64), spacing=(2.0, 0.4, 0.4), seed=12)}


def _same_views(a, b, key="stage"):
    assert len(a) == len(b)
    for v, w in zip(a, b):
        v, w = as_view(v), as_view(w)
        assert v.dims == w.dims
        np.testing.assert_array_equal(np.asarray(w.values), np.asarray(v.values))
        np.testing.assert_allclose(get_spacing(w, True), get_spacing(v, True), rtol=1e-12)
        np.testing.assert_allclose(get_origin(w, True), get_origin(v, True), atol=1e-9)
        np.testing.assert_allclose(get_affine(w, key), get_affine(v, key), atol=1e-9)


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("ndim", [2, 3])
def test_tiff_round_trip(tmp_path, ndim):
    views, truth = tiled_dataset(**DATASETS[ndim])
    paths = write_tiles(views, tmp_path, tile=(32, 32))
    assert len(paths) == len(views) and (tmp_path / "positions.csv").is_file()
    back = read_tiles(tmp_path, positions=tmp_path / "positions.csv")
    assert all(isinstance(v.data, da.Array) for v in back)
    _same_views(views, back)
    # the stage positions are just as wrong as before against the ground truth (same transforms, to 1e-9 px)
    e0, e1 = registration_error(views, "stage", truth), registration_error(back, "stage", truth)
    np.testing.assert_allclose(e1["per_view_px"], e0["per_view_px"], atol=1e-9)
    # names come from the files, and a JSON positions file gives the same result
    tiles = [{"file": p.name, "position": list(get_affine(v, "stage")[:-1, -1])} for p, v in zip(paths, views)]
    (tmp_path / "positions.json").write_text(json.dumps(tiles[::-1]))  # matched by name, not by order
    _same_views(views, read_tiles(tmp_path, positions=tmp_path / "positions.json"))


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_round_trip(tmp_path, ndim, version):
    views, truth = tiled_dataset(**DATASETS[ndim])
    for i, v in enumerate(views): write_ome_zarr(v, tmp_path / f"t{i}.ome.zarr", min_size=16, chunks=32, version=version)
    back = read_views(tmp_path)
    assert all(is_multiscale(b) for b in back)
    _same_views(views, [as_view(b, 0) for b in back])
    np.testing.assert_allclose(registration_error([as_view(b) for b in back], "stage", truth)["per_view_px"],
                               registration_error(views, "stage", truth)["per_view_px"], atol=1e-9)
    # every pyramid level covers the same world region (pixel-centre convention of 00_spatial)
    for v, b in zip(views, back):
        for k in range(len(multiscale_levels(b))):
            lk = as_view(b, k)
            np.testing.assert_allclose(view_corners(lk, "stage"), view_corners(v, "stage"),
                                       atol=1e-9 + float(np.max(get_spacing(lk, True))))
            exact = all(v.sizes[d] % round(get_spacing(lk)[d] / get_spacing(v)[d]) == 0 for d in get_spacing(v))
            if exact: np.testing.assert_allclose(view_corners(lk, "stage"), view_corners(v, "stage"), atol=1e-9)
        # level 1 holds 2x2(x1) block means of level 0
        l1 = as_view(b, 1)
        f = {d: round(get_spacing(l1)[d] / get_spacing(v)[d]) for d in get_spacing(v)}
        blk = np.asarray(v.values, float)[tuple(slice(0, f[d]) for d in get_spacing(v))].mean()
        assert abs(float(l1.values.flat[0]) - blk) <= 1.0  # integer rounding of the mean


def test_ome_zarr_dataset_written_by_ngff_zarr_with_units(tmp_path):
    "A file we did not write: nanometre units and a multiscale-level translation are read in micrometres."
    import ngff_zarr as nz
    a = np.random.default_rng(0).integers(0, 1000, (40, 48)).astype(np.uint16)
    img = nz.to_ngff_image(a, dims=["y", "x"], scale={"y": 650.0, "x": 650.0}, translation={"y": 1300.0, "x": 0.0},
                           axes_units={"y": "nanometer", "x": "nanometer"})
    nz.to_ngff_zarr(str(tmp_path / "a.zarr"), nz.to_multiscales(img, scale_factors=[]), version="0.4")
    g = zarr.open_group(tmp_path / "a.zarr", mode="r+")
    attrs = g.attrs.asdict()
    attrs["multiscales"][0]["coordinateTransformations"] = [{"type": "scale", "scale": [1.0, 1.0]},
                                                            {"type": "translation", "translation": [5000.0, 10000.0]}]
    g.attrs.update(attrs)
    v = read_ome_zarr(tmp_path / "a.zarr")
    assert get_spacing(v) == pytest.approx({"y": 0.65, "x": 0.65})
    assert get_origin(v) == pytest.approx({"y": 1.3, "x": 0.0})
    np.testing.assert_allclose(get_affine(v, "stage"), affine_from_translation([5.0, 10.0]))
    np.testing.assert_array_equal(v.values, a)


def test_ome_zarr_affine_transform_is_read(tmp_path):
    "NGFF 0.6-dev 'affine' coordinate transformations (RFC-5) at the multiscale level are honoured."
    v = view_from_array(np.zeros((4, 16, 16), np.uint8), spacing=(2, 1, 1))
    write_ome_zarr(v, tmp_path / "a.zarr", pyramid=False, version="0.5")
    g = zarr.open_group(tmp_path / "a.zarr", mode="r+")
    attrs = g.attrs.asdict()
    rot = affine_from_rotation(0.2, axis=[1, 0, 0], center=[4, 8, 8])
    attrs["ome"]["multiscales"][0]["coordinateTransformations"] = [{"type": "affine", "affine": rot[:-1].tolist()}]
    g.attrs.update(attrs)
    np.testing.assert_allclose(get_affine(read_ome_zarr(tmp_path / "a.zarr"), "stage"), rot, atol=1e-12)


def test_write_transforms_back_to_ome_zarr(tmp_path):
    views, truth = tiled_dataset(**DATASETS[3])
    v = views[0]
    p = tmp_path / "t.ome.zarr"
    write_ome_zarr(v, p, pyramid=False)
    # a rigid transform with a rotation: NGFF 0.5 cannot hold it -> sidecar; the stage transform stays in NGFF
    reg = affine_from_rotation(0.05, axis=[0.2, 0.3, 1.0], center=[8, 10, 12]) @ truth[0]
    set_affine(v, reg, "registered")
    assert write_transforms_to_ome_zarr(p, v, "registered") == "sidecar"
    side = json.loads((p / SIDECAR_NAME).read_text())
    assert side["format"] == "multiview_reg.ome_zarr_transforms" and "registered" in side["transforms"]
    back = read_ome_zarr(p)
    np.testing.assert_allclose(get_affine(back, "registered"), reg, atol=1e-12)
    np.testing.assert_allclose(get_affine(back, "stage"), get_affine(v, "stage"), atol=1e-12)
    # a translation is written as NGFF coordinate transformations; the replaced 'stage' moves to the sidecar
    shift = affine_from_translation([1.0, -2.5, 3.25]) @ get_affine(v, "stage")
    assert write_transforms_to_ome_zarr(p, shift, "translated") == "coordinateTransformations"
    ms = zarr.open_group(p, mode="r").attrs.asdict()["ome"]["multiscales"][0]
    assert ms["coordinateTransformations"][1]["translation"] == pytest.approx(list(shift[:-1, -1]))
    back = read_ome_zarr(p)
    for key, a in (("translated", shift), ("stage", get_affine(v, "stage")), ("registered", reg)):
        np.testing.assert_allclose(get_affine(back, key), a, atol=1e-12)


def test_transforms_file_round_trip(tmp_path):
    views, truth = tiled_dataset(ndim=2, grid=(2, 2), tile_shape=(32, 32), rotation=0.02, seed=3)
    views3, truth3 = tiled_dataset(ndim=3, grid=(1, 1, 2), tile_shape=(4, 16, 16), seed=3)
    for vs, ts in ((views, truth), (views3, truth3)):
        for v, t in zip(vs, ts): set_affine(v, affine_from_rotation(0.1, axis=[1, 2, 3]) @ t if t.shape[0] == 4 else t, "truth")
        f = save_transforms(vs, tmp_path / "t.json", "truth", qualities={"mean_quality": 0.8})
        doc = json.loads(f.read_text())
        assert doc["software"]["name"] == "multiview_reg" and doc["software"]["version"]
        assert doc["quality"] == {"mean_quality": 0.8} and len(doc["views"]) == len(vs)
        fresh = [view_from_array(v.data, spacing=get_spacing(v)) for v in vs]
        apply_transforms(fresh, load_transforms(f), "registered")
        for v, w in zip(vs, fresh):
            np.testing.assert_allclose(get_affine(w, "registered"), get_affine(v, "truth"), rtol=0, atol=1e-12)
        assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary file
    err = registration_error(fresh, "registered", [affine_from_rotation(0.1, axis=[1, 2, 3]) @ t for t in truth3], gauge="none")
    assert err["max_px"] < 1e-9


def test_pickled_tiff_views_compute_in_another_process_layout(tmp_path):
    "Views read from TIFFs survive pickling (as they must to go to distributed workers)."
    views, _ = tiled_dataset(**DATASETS[2])
    write_tiles(views, tmp_path)
    back = read_tiles(tmp_path, positions=tmp_path / "positions.csv")
    again = pickle.loads(pickle.dumps(back[2]))
    np.testing.assert_array_equal(again.values, views[2].values)
    # and many threads may read one file at once
    parts = [back[0].data[i::4] for i in range(4)]
    with dask.config.set(scheduler="threads", num_workers=4):
        got = dask.compute(*parts)
    for i, g in enumerate(got): np.testing.assert_array_equal(g, views[0].values[i::4])


def test_grid_layouts(tmp_path):
    views, _ = tiled_dataset(ndim=2, grid=(2, 2), tile_shape=(32, 32), overlap=0.25, seed=1)
    # snake order: the scanner visited (0,0), (0,1), (1,1), (1,0)
    order = [0, 1, 3, 2]
    write_tiles([views[i] for i in order], tmp_path, names=[f"img_{k}" for k in range(4)])
    g = read_tiles(tmp_path, grid=(2, 2), order="snake", overlap=0.25)
    for k, i in enumerate(order):
        np.testing.assert_allclose(get_affine(g[k], "stage"), get_affine(views[i], "stage"), atol=1e-9)
    # a filename pattern with row/col groups gives the same positions, whatever the file order
    names = ["scan_r0_c0", "scan_r0_c1", "scan_r1_c0", "scan_r1_c1"]
    write_tiles(views, tmp_path / "pat", names=names)
    pt = read_tiles(tmp_path / "pat" / "scan_*.ome.tif", pattern=r"r(?P<row>\d+)_c(?P<col>\d+)", overlap=0.25)
    for v, w in zip(views, pt): np.testing.assert_allclose(get_affine(w, "stage"), get_affine(v, "stage"), atol=1e-9)
    with pytest.raises(ValueError, match="named groups 'row' and 'col'"):
        read_tiles(tmp_path, pattern=r"img_(?P<col>\d)")
    with pytest.raises(ValueError, match="order: expected 'raster' or 'snake'"):
        read_tiles(tmp_path, grid=(2, 2), order="zigzag")


def test_channels_and_time_points(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, (3, 2, 5, 32, 40)).astype(np.uint16)  # t, c, z, y, x
    v = view_from_array(data, dims="tczyx", spacing=(1.5, 0.3, 0.3), c_coords=["dapi", "gfp"])
    write_tiles([v], tmp_path)
    (b,) = read_tiles(tmp_path, positions=tmp_path / "positions.csv")
    assert b.dims == ("t", "c", "z", "y", "x") and list(b.coords["c"].values) == ["dapi", "gfp"]
    np.testing.assert_array_equal(b.values, data)
    assert get_spacing(b) == pytest.approx({"z": 1.5, "y": 0.3, "x": 0.3})
    (g,) = read_tiles(tmp_path, positions=tmp_path / "positions.csv", channel=1)
    np.testing.assert_array_equal(g.values[:, 0], data[:, 1])


# ---------------------------------------------------------------- corrupt and mismatched inputs

@pytest.fixture
def tiles(tmp_path):
    views, _ = tiled_dataset(ndim=2, grid=(1, 3), tile_shape=(48, 64), seed=2)
    return views, write_tiles(views, tmp_path / "t", tile=(16, 16)), tmp_path


def test_missing_files(tiles):
    views, paths, d = tiles
    with pytest.raises(FileNotFoundError, match="paths: file .*nope.tif' does not exist"):
        read_tiles([paths[0], d / "nope.tif"], positions=np.zeros((2, 2)))
    with pytest.raises(FileNotFoundError, match="positions: file"):
        read_tiles(d / "t", positions=d / "t" / "missing.csv")
    with pytest.raises(FileNotFoundError, match="no TIFF files"):
        read_tiles(d)  # a folder without TIFFs (only the sub-folder)
    with pytest.raises(FileNotFoundError, match="transforms file"):
        load_transforms(d / "none.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_ome_zarr(d / "none.zarr")


def test_positions_count_mismatch(tiles):
    views, paths, d = tiles
    (d / "p.csv").write_text("file,y,x\n" + "".join(f"{p.name},0,{i}\n" for i, p in enumerate(paths[:2])))
    with pytest.raises(ValueError, match="has 2 positions for 3 tiles"):
        read_tiles(d / "t", positions=d / "p.csv")
    (d / "p.json").write_text(json.dumps([[0, 0]] * 4))
    with pytest.raises(ValueError, match="has 4 positions for 3 tiles"):
        read_tiles(d / "t", positions=d / "p.json")
    with pytest.raises(ValueError, match="the array has 2 positions for 3 tiles"):
        read_tiles(d / "t", positions=np.zeros((2, 2)))
    (d / "q.csv").write_text("file,y,x\n" + "".join(f"other_{i}.tif,0,{i}\n" for i in range(3)))
    with pytest.raises(ValueError, match="no position for file 'tile_000.ome.tif'"):
        read_tiles(d / "t", positions=d / "q.csv")


def test_non_numeric_positions(tiles):
    views, paths, d = tiles
    (d / "p.csv").write_text(f"file,y,x\n{paths[0].name},0,0\n{paths[1].name},0,12..5\n{paths[2].name},0,40\n")
    with pytest.raises(ValueError, match=r"row 2 \('tile_001.ome.tif'\): column 'x' is not a number: '12..5'"):
        read_tiles(d / "t", positions=d / "p.csv")
    (d / "p.json").write_text(json.dumps([{"file": p.name, "position": [0, "left"]} for p in paths]))
    with pytest.raises(ValueError, match="entry 0 .*column 'x' is not a number: 'left'"):
        read_tiles(d / "t", positions=d / "p.json")
    (d / "n.csv").write_text("file,y,x\n" + "".join(f"{p.name},0,nan\n" for p in paths))
    with pytest.raises(ValueError, match="column 'x' is not finite"):
        read_tiles(d / "t", positions=d / "n.csv")
    (d / "c.csv").write_text("file,row,col\n" + "".join(f"{p.name},0,0\n" for p in paths))
    with pytest.raises(ValueError, match=r"has no column\(s\) \['y', 'x'\]"):
        read_tiles(d / "t", positions=d / "c.csv")
    with pytest.raises(ValueError, match="positions: expected numbers"):
        read_tiles(d / "t", positions=[["a", "b"]] * 3)


@pytest.mark.parametrize("keep", [0.95, 0.5, 0.05])
def test_truncated_tiff(tiles, keep):
    views, paths, d = tiles
    raw = paths[1].read_bytes()
    (d / "cut").mkdir()
    (d / "cut" / "x.tif").write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(ValueError, match="x.tif (is truncated|is not a readable TIFF \\(truncated)"):
        read_tiles(d / "cut", positions=[[0, 0]])


def test_not_a_tiff(tiles):
    views, paths, d = tiles
    (d / "junk").mkdir(); (d / "junk" / "a.tif").write_text("hello")
    with pytest.raises(ValueError, match="a.tif is not a readable TIFF"):
        read_tiles(d / "junk", positions=[[0, 0]])


def test_zarr_without_multiscales(tmp_path):
    zarr.open_group(tmp_path / "g.zarr", mode="w").create_array("0", shape=(8, 8), dtype="u2")
    with pytest.raises(ValueError, match="has no OME-Zarr 'multiscales' metadata"):
        read_ome_zarr(tmp_path / "g.zarr")
    zarr.open_array(tmp_path / "a.zarr", shape=(8, 8), dtype="u2", mode="w")
    with pytest.raises(ValueError, match="is not a Zarr group"):
        read_ome_zarr(tmp_path / "a.zarr")
    v = view_from_array(np.zeros((16, 16), np.uint8))
    write_ome_zarr(v, tmp_path / "b.zarr", pyramid=False)
    import shutil; shutil.rmtree(tmp_path / "b.zarr" / "scale0")
    with pytest.raises(ValueError, match="dataset 'scale0/image' listed in the multiscales .* is missing"):
        read_ome_zarr(tmp_path / "b.zarr")


def test_mismatched_spacing(tmp_path):
    a = view_from_array(np.zeros((32, 32), np.uint16), spacing=0.5)
    b = view_from_array(np.zeros((32, 32), np.uint16), spacing=0.65)
    write_tiles([a, b], tmp_path / "t")
    with pytest.raises(ValueError, match="spacing: the tiles' metadata disagree: tile_000.ome.tif has y-spacing 0.5, "
                                         "tile_001.ome.tif has 0.65"):
        read_tiles(tmp_path / "t", positions=tmp_path / "t" / "positions.csv")
    with pytest.warns(UserWarning, match="overrides the files' metadata"):
        r = read_tiles(tmp_path / "t", positions=tmp_path / "t" / "positions.csv", spacing=0.5)
    assert get_spacing(r[1]) == {"y": 0.5, "x": 0.5}
    write_ome_zarr(a, tmp_path / "a.zarr", pyramid=False)
    with pytest.raises(ValueError, match="does not match the spacing"):
        write_transforms_to_ome_zarr(tmp_path / "a.zarr", b, "stage")


def test_bad_transforms_files(tmp_path):
    views, _ = tiled_dataset(ndim=2, grid=(1, 3), tile_shape=(32, 32), seed=0)
    f = save_transforms(views, tmp_path / "t.json", "stage", names=["a", "b", "c"])
    doc = json.loads(f.read_text())
    cases = {"nan": (lambda d: d["views"][1]["affine"][0].__setitem__(2, float("inf")),
                     re.escape("entry 1 ('b'): the affine contains NaN or infinite values")),
             "shape": (lambda d: d["views"][2].__setitem__("affine", np.eye(4).tolist()),
                       r"entry 2 \('c'\): expected a \(3, 3\) affine for ndim=2, got shape \(4, 4\)"),
             "text": (lambda d: d["views"][0].__setitem__("affine", "identity"), "entry 0 \\('a'\\): the affine is not a numeric matrix"),
             "row": (lambda d: d["views"][0]["affine"][2].__setitem__(0, 1.0), "entry 0 \\('a'\\): .*last row"),
             "ndim": (lambda d: d["views"][1].__setitem__("ndim", 4), "entry 1 \\('b'\\): 'ndim' must be 2 or 3"),
             "format": (lambda d: d.__setitem__("format", "other"), "not a multiview_reg transforms file")}
    for name, (edit, msg) in cases.items():
        d = json.loads(json.dumps(doc)); edit(d)
        (tmp_path / f"{name}.json").write_text(json.dumps(d))
        with pytest.raises(ValueError, match=msg):
            load_transforms(tmp_path / f"{name}.json")
    (tmp_path / "cut.json").write_text(f.read_text()[:50])
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_transforms(tmp_path / "cut.json")
    loaded = load_transforms(f)
    with pytest.raises(ValueError, match="2 views for 3 transforms"):
        apply_transforms(views[:2], loaded)


# ---------------------------------------------------------------- lazy reading

def _blocks(lo, hi, chunk):
    return set(range(lo // chunk, (hi - 1) // chunk + 1))


def test_lazy_tiff_reads_only_overlap_chunks(tmp_path):
    views, _ = tiled_dataset(ndim=3, grid=(1, 1, 2), tile_shape=(6, 64, 96), overlap=0.25, seed=4)
    write_tiles(views, tmp_path, tile=(16, 16))
    with ChunkReadCounter() as probe:
        left, right = read_tiles(tmp_path, positions=tmp_path / "positions.csv", chunks=(1, 16, 16))
    assert probe.n == 0  # opening reads metadata only
    # the overlap of the two tiles, in the left tile: world bounds of the right tile mapped into the left tile
    lo = view_corners(right, "stage").min(0)
    with ChunkReadCounter() as probe:
        sub = left.sel(x=slice(lo[2], None), y=slice(10, 30), z=slice(2.0, 6.0)).values
    x0 = int(np.ceil((lo[2] - float(left.x[0])) / float(left.x[1] - left.x[0])))
    y0, y1 = int(np.ceil(10 / 0.5)), int(np.floor(30 / 0.5)) + 1
    z0, z1 = 1, 4
    want = len(range(z0, z1)) * len(_blocks(y0, y1, 16)) * len(_blocks(x0, 96, 16))
    total = 6 * (64 // 16) * (96 // 16)
    assert probe.n == want < total / 4
    np.testing.assert_array_equal(sub, views[0].values[z0:z1, y0:y1, x0:])


def test_lazy_ome_zarr_reads_only_overlap_chunks(tmp_path):
    views, _ = tiled_dataset(ndim=3, grid=(1, 1, 2), tile_shape=(8, 64, 96), overlap=0.25, seed=5)
    for i, v in enumerate(views): write_ome_zarr(v, tmp_path / f"t{i}.ome.zarr", chunks=16, min_size=16)
    with ChunkReadCounter() as probe:
        left, right = read_views(tmp_path)
    assert probe.n == 0
    lo = view_corners(right, "stage").min(0)
    full = as_view(left, 0)
    with ChunkReadCounter() as probe:
        sub = full.sel(x=slice(lo[2], None)).values
    x0 = int(np.ceil((lo[2] - float(full.x[0])) / float(full.x[1] - full.x[0])))
    want = (8 // 8 if 8 <= 16 else 0) * (64 // 16) * len(_blocks(x0, 96, 16))
    assert probe.n == want
    assert all(k.startswith("scale0/") for k in probe.keys)  # no other level touched
    np.testing.assert_array_equal(sub, views[0].values[:, :, x0:])
    # a coarse level of the overlap reads from that level only
    with ChunkReadCounter() as probe:
        as_view(left, 1).sel(x=slice(lo[2], None)).values
    assert probe.n > 0 and all(k.startswith("scale1/") for k in probe.keys)
