"""The `multiview-reg` console script, run as a user would (subprocess), checked against ground truth."""
import json
import subprocess

import numpy as np
import pytest

from multiview_reg.data import tiled_dataset
from multiview_reg.metrics import registration_error
from multiview_reg.io import write_tiles, load_transforms, apply_transforms


def _run(*args, cwd=None):
    "Run the installed console script, as a user would."
    return subprocess.run(["multiview-reg", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def _main(capsys, *args):
    "The same entry point in this process (cheaper than a subprocess on a loaded machine): (code, stdout, stderr)."
    from multiview_reg.cli import main
    try: code = main([str(a) for a in args])
    except SystemExit as e: code = e.code
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, cap.out, cap.err)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiles")
    views, truth = tiled_dataset(ndim=2, grid=(2, 3), tile_shape=(160, 160), spacing=0.5, seed=7)
    write_tiles(views, d)
    return d, views, truth


def test_help_is_newcomer_friendly():
    p = subprocess.run(["multiview-reg", "--help"], capture_output=True, text=True)
    assert p.returncode == 0
    for word in ("demo", "register", "examples:", "positions.csv", "--spacing"):
        assert word in p.stdout, word
    p = _run("register", "--help")  # noqa
    assert p.returncode == 0 and "--positions" in p.stdout and "first pixel" in p.stdout


def test_demo_exits_0_and_registers(tmp_path):
    p = subprocess.run(["multiview-reg", "demo", "--out", tmp_path / "out"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "summary.png").stat().st_size > 10_000
    line = next(l for l in p.stdout.splitlines() if "after:" in l)
    after_max = float(line.split("max")[1].split("px")[0])
    assert after_max < 0.1, p.stdout
    # the written transforms reproduce the ground truth
    views, truth = tiled_dataset(ndim=2, seed=0)
    apply_transforms(views, load_transforms(tmp_path / "out" / "transforms.json"), "loaded")
    assert registration_error(views, "loaded", truth)["max_px"] < 0.1


def test_register_tiffs_writes_accurate_transforms(tiles, tmp_path, capsys):
    d, views, truth = tiles
    out = tmp_path / "t.json"
    p = _main(capsys, "register", *sorted(d.glob("*.tif")), "--positions", d / "positions.csv", "--spacing", 0.5,
             "--out", out, "--quiet")
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert [e["name"] for e in doc["views"]] == [f"tile_{i:03d}.ome.tif" for i in range(6)]
    assert all(0.5 < e["quality"] <= 1 for e in doc["views"])
    fresh, _ = tiled_dataset(ndim=2, grid=(2, 3), tile_shape=(160, 160), spacing=0.5, seed=7)
    apply_transforms(fresh, load_transforms(out), "loaded", by_name=False)
    assert registration_error(fresh, "loaded", truth)["max_px"] < 0.1
    # a folder works too
    p = _main(capsys, "register", d, "--positions", d / "positions.csv", "--out", tmp_path / "t2.json", "--quiet")
    assert p.returncode == 0, p.stderr


def _one_line_error(p, *words):
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("multiview-reg register: error:"), lines[0]
    for w in words: assert w in lines[0], (w, lines[0])


def test_input_errors_one_line_exit_2(tiles, tmp_path, capsys):
    d, views, truth = tiles
    tifs = sorted(d.glob("*.tif"))
    # a missing tile, through the installed console script
    _one_line_error(_run("register", tmp_path / "nope.tif", tifs[0], "--positions", d / "positions.csv"),
                    "does not exist")
    run = lambda *a: _main(capsys, *a)  # the other cases in-process: same entry point, same messages
    # a missing positions file
    _one_line_error(run("register", *tifs, "--positions", tmp_path / "nope.csv"), "positions", "does not exist")
    # bad positions: a value that is not a number
    bad = tmp_path / "bad.csv"
    rows = (d / "positions.csv").read_text().splitlines()
    bad.write_text("\n".join(rows[:2] + [rows[2].rsplit(",", 1)[0] + ",abc"] + rows[3:]) + "\n")
    _one_line_error(run("register", *tifs, "--positions", bad), "positions", "not a number")
    # mismatched counts: fewer positions than tiles
    few = tmp_path / "few.csv"
    few.write_text("\n".join(rows[:-2]) + "\n")
    _one_line_error(run("register", *tifs, "--positions", few), "positions", "4 positions for 6 tiles")
    # neither positions nor a grid
    _one_line_error(run("register", *tifs), "positions")
    # an unknown pairwise method names the known ones
    _one_line_error(run("register", *tifs, "--positions", d / "positions.csv", "--method", "nope", "--quiet"),
                    "pairwise_reg_func: unknown", "phase_correlation")
    # a usage error caught by argparse is exit code 2 as well
    p = run("register")
    assert p.returncode == 2 and "TILES" in p.stderr
