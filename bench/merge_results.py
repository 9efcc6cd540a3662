"Merge the per-topic benchmark results (bench/RESULTS_<topic>.md, written by each bench script) into bench/RESULTS.md."
from pathlib import Path

ORDER = ["real", "round2", "register", "pairwise", "resolvers", "speed", "graph", "scale", "fusion", "markers", "io", "atlas"]
HERE = Path(__file__).parent


def merge():
    parts = {p.stem[len("RESULTS_"):]: p for p in HERE.glob("RESULTS_*.md")}
    topics = [t for t in ORDER if t in parts] + sorted(t for t in parts if t not in ORDER)
    out = ["# Benchmark results", "",
           "Run by hand (`python bench/bench_<topic>.py`), never in CI; each script writes `bench/RESULTS_<topic>.md`,",
           "and `python bench/merge_results.py` gathers them here. Machine: 2 cores, 24 GiB, shared; each section notes",
           "the load average during its run: wall times on a loaded machine are inflated, ratios measured in one run",
           "are the figures to compare.", ""]
    out += [f"- [{t}](#{t})" for t in topics] + [""]
    for t in topics:
        body = parts[t].read_text().strip().splitlines()
        if body and body[0].startswith("# "): body[0] = "#" + body[0]  # demote the section title
        out += [f'<a id="{t}"></a>', ""] + body + [""]
    (HERE / "RESULTS.md").write_text("\n".join(out))


if __name__ == "__main__":
    merge()
