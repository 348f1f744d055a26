"""Time train + export + store, per step, on iris and on a synthetic set.

    python bench/bench_train.py                   # iris (median of 5) and synthetic:60000x20
    python bench/bench_train.py --rows 10000      # a smaller synthetic set

The synthetic default is sized so training takes about 30 s on a 2-core machine; the
orchestration benchmark uses the same size to show what resuming from the store skips.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from kiln.store.artifact_store import ArtifactStore
from kiln.training.export import check_parity, export_onnx
from kiln.training.params import TrainParams
from kiln.training.promotion import GatePolicy
from kiln.training.sequence import Exported, TrainingSteps, run_training

STEPS = ("load", "train", "export", "parity", "store")


def run_once(spec: str, store: ArtifactStore) -> dict[str, float]:
    """The training sequence as `kiln train` runs it, each step timed (export and parity apart)."""
    times: dict[str, float] = {}

    def timed(name: str, step: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            start = time.perf_counter()
            value = step(*args)
            times[name] = time.perf_counter() - start
            return value

        return run

    def export(data: Any, params: TrainParams, result: Any) -> Exported:
        onnx_bytes = timed("export", export_onnx)(result.model, data.n_features)
        parity = timed("parity", check_parity)(onnx_bytes, result.model, result.X_holdout)
        return Exported(onnx_bytes, parity)

    plain = TrainingSteps()
    steps = TrainingSteps(
        load=timed("load", plain.load),
        train=timed("train", plain.train),
        export=export,
        store=timed("store", plain.store),
    )
    run_training(store, TrainParams(data=spec), GatePolicy(threshold=0.0), steps)
    return {step: times[step] for step in STEPS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60000, help="synthetic rows")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5, help="iris repetitions (median)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as root:
        iris_runs = [run_once("iris", ArtifactStore(f"{root}/i{i}")) for i in range(args.repeat)]
        iris = {step: statistics.median(run[step] for run in iris_runs) for step in STEPS}
        spec = f"synthetic:{args.rows}x{args.features}"
        synthetic = run_once(spec, ArtifactStore(f"{root}/synthetic"))

    print(f"{'dataset':<24}" + "".join(f"{s:>10}" for s in STEPS) + f"{'total':>10}")
    for name, row in ((f"iris (median of {args.repeat})", iris), (spec, synthetic)):
        cells = "".join(f"{row[s]:>9.3f}s" for s in STEPS)
        print(f"{name:<24}{cells}{sum(row.values()):>9.3f}s")


if __name__ == "__main__":
    main()
