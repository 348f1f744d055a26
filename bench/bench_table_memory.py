"""Memory of loading a large mixed table: the peak resident size of a process that reads a
CSV of ROWS rows (13 numbers, a text column, a boolean, missing cells: wine's columns
resampled) into kiln's training form, against the CSV's size and against pandas reading
the same file plainly, each in a fresh process of its own.

    python bench/bench_table_memory.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

KILN = """
import resource, sys, time
sys.path.insert(0, {repo!r})
from kiln.training.data import load_data
from kiln.training.table import DataLimits
started = time.perf_counter()
data = load_data({path!r}, "cultivar", DataLimits(max_rows=10_000_000, max_bytes=2**34))
seconds = time.perf_counter() - started
print(data.n_rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, seconds)
"""
PANDAS = """
import resource, time
import pandas as pd
started = time.perf_counter()
frame = pd.read_csv({path!r})
seconds = time.perf_counter() - started
print(len(frame), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, seconds)
"""
BASELINE = """
import resource, sys
sys.path.insert(0, {repo!r})
import pandas, numpy, kiln.training.data
print(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 0)
"""


def write_table(path: Path, rows: int) -> None:
    sys.path.insert(0, str(REPO))
    import numpy as np

    from tests.support import tables

    base = tables.wine_mixed()
    picks = np.random.default_rng(0).integers(0, len(base), rows)
    base.iloc[picks].to_csv(path, index=False)


def measure(code: str, path: Path) -> tuple[int, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", code.format(repo=str(REPO), path=str(path))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1]) / 1024, float(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="kiln-bench-table-"))
    path = folder / "mixed.csv"
    began = time.perf_counter()
    write_table(path, args.rows)
    size = path.stat().st_size / 2**20
    wrote = time.perf_counter() - began
    print(f"table: {args.rows:,} rows, {size:.0f} MiB of CSV ({wrote:.0f} s to write)")
    _, imports, _ = measure(BASELINE, path)
    rows, kiln_peak, kiln_seconds = measure(KILN, path)
    _, pandas_peak, pandas_seconds = measure(PANDAS, path)
    print(f"imports alone            peak {imports:7.0f} MiB")
    print(f"pandas.read_csv          peak {pandas_peak:7.0f} MiB  {pandas_seconds:5.1f} s")
    print(f"kiln load_data ({rows:,})  peak {kiln_peak:7.0f} MiB  {kiln_seconds:5.1f} s")
    print(f"kiln / pandas: {kiln_peak / pandas_peak:.2f}x memory; kiln above its imports: "
          f"{(kiln_peak - imports) / size:.1f}x the CSV's size")  # fmt: skip
    path.unlink()


if __name__ == "__main__":
    main()
