"""Issue 20's table re-measured side by side in one run: every row, ours and multiview-stitcher's where the peer has
the case, each (case, tool) in a fresh subprocess, `--repeats` times; the median wall and CPU time are reported and
the speed-up is the ratio of medians measured in this run.

Run by hand:  python bench/bench_round2.py [--repeats 3] [--out bench/RESULTS_round2.md] [--rows 0 1]
(--rows: only these rows of ROWS, by index, e.g. `--rows 0 1 --out bench/RESULTS_round2_pc.md` for the two
phase-correlation rows)

Cases (each delegates to the bench script that documents it):
- 2D 4x4 of 512^2 and 3D 3x3 of 64x256x256 (spacing 2, .5, .5), phase correlation: `bench_register.py --run`;
- 3D 2x2 rotated <= 2 deg, elastix rigid (ours and the peer: in a fresh process, with itk's wrappers loaded before, and
  as a second call with everything loaded) and SimpleITK rigid (ours): `bench_speed.py --run rot_*`;
- rigid resolution of 10,000 views: `bench_speed.py --run resolve_10k`;
- 1,600 views (40x40 of 32^2) with a trivial pairwise function: `bench_overhead.py --grid 40 --json`.
"""
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).parent
ROWS = [  # (row label, script, args ours, args peer or None)
    ("2D 4x4 of 512^2, phase correlation", "bench_register.py", ["--run", "ours", "2d_4x4_512"], ["--run", "peer", "2d_4x4_512"]),
    ("3D 3x3 of 64x256x256 anisotropic, phase correlation", "bench_register.py", ["--run", "ours", "3d_3x3_64x256x256"],
     ["--run", "peer", "3d_3x3_64x256x256"]),
    ("3D 2x2 rotated <= 2 deg, elastix rigid", "bench_speed.py", ["--run", "rot_elastix", "ours"], ["--run", "rot_elastix", "peer"]),
    ("same, itk-elastix loaded before the call", "bench_speed.py", ["--run", "rot_elastix_warm", "ours"],
     ["--run", "rot_elastix_warm", "peer"]),
    ("same, second call in the process (everything loaded)", "bench_speed.py", ["--run", "rot_elastix_second", "ours"],
     ["--run", "rot_elastix_second", "peer"]),
    ("same, second call; the peer with transform_types=['rigid'] too", "bench_speed.py", ["--run", "rot_elastix_second", "ours"],
     ["--run", "rot_elastix_second", "peer_rigid"]),
    ("same, SimpleITK rigid", "bench_speed.py", ["--run", "rot_sitk", "ours"], None),
    ("1,600 views, trivial pairwise function", "bench_overhead.py", ["--grid", "40", "--json"], None),
    ("rigid resolution, 10,000 views", "bench_speed.py", ["--run", "resolve_10k", "ours"], None),
]


def run(script, args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))  # this checkout
    p = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True, env=env)
    line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None: return {"failed": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(line[7:])


def _err(r):
    for a, b in (("mean_px", "max_px"), ("rms_px", "max_px")):
        if a in r: return f"{r[a]:.3f} / {r[b]:.3f} px"
    return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "RESULTS_round2.md"))
    ap.add_argument("--rows", type=int, nargs="*", default=None, help="only these rows (indices into ROWS)")
    a = ap.parse_args()
    rows = ROWS if a.rows is None else [ROWS[i] for i in a.rows]
    load0, t0 = os.getloadavg(), time.time()
    table = ["| case | ours wall / CPU s (median) | peer wall / CPU s (median) | speed-up wall (CPU) | ours error | peer error |",
             "|---|---|---|---|---|---|"]
    raw = []
    for label, script, ours, peer in rows:
        res = {"ours": [run(script, ours) for _ in range(a.repeats)]}
        if peer: res["peer"] = [run(script, peer) for _ in range(a.repeats)]
        raw.append({"case": label, **res})
        med = {}
        for tool, rs in res.items():
            ok = [r for r in rs if "failed" not in r]
            med[tool] = (statistics.median(r["wall_s"] for r in ok), statistics.median(r["cpu_s"] for r in ok), ok[0]) if ok else None
        fmt = lambda m: "failed" if m is None else f"{m[0]:.2f} / {m[1]:.2f}"
        o, p = med["ours"], med.get("peer")
        ratio = f"{p[0] / o[0]:.1f}x ({p[1] / o[1]:.1f}x)" if o and p else "-"
        table.append(f"| {label} | {fmt(o)} | {fmt(p) if peer else '(no peer case)'} | {ratio} | {_err(o[2]) if o else ''} | "
                     f"{_err(p[2]) if p else ''} |")
        print(table[-1], flush=True)
    load1 = os.getloadavg()
    head = [f"# Issue 20, every row side by side in one run", "",
            f"`python bench/bench_round2.py --repeats {a.repeats}" + (f" --rows {' '.join(map(str, a.rows))}" if a.rows is not None else "") + f"`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}, "
            f"{os.cpu_count()} cores; load average {load0[0]:.1f} at start, {load1[0]:.1f} at end (a shared machine: wall "
            "times move with the load, ratios and CPU times less). Each (case, tool) in a fresh subprocess; medians of "
            f"{a.repeats}; errors of the first successful run (corner error against the truth, rigid gauge; for the "
            "resolution, RMS / max correction error).", ""]
    Path(a.out).write_text("\n".join(head + table) + "\n")
    Path(a.out).with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print("written", a.out)


if __name__ == "__main__":
    main()
