"""End-to-end `crsrisk score` throughput against the bare booster on the same rows, and memory.

    python bench/scoring.py --n 1000000            # make bench
    python bench/scoring.py --n 200000 --skip-4m   # a quick look
    python bench/scoring.py --memory-only          # peak memory at 1M and 4M rows only
    python bench/scoring.py --skip-4m --drivers off  # the no-drivers ratios only

A small XGBoost model is trained and registered into a temporary tracking store; N patients are
simulated and written as Parquet and CSV. Then, on the same N rows:

* the bare booster's ``inplace_predict`` (what ``XGBClassifier.predict_proba`` runs) and bare
  ``pred_contribs`` (TreeSHAP) on the ready-made model matrix: the reference, which reads,
  checks and writes nothing;
* ``score_file`` (read, validate every chunk against the contract, features, booster,
  calibration, tiers, planning, optionally drivers in words, write scores and rejected rows),
  from Parquet and from CSV, without and with drivers, writing Parquet.

A ratio is bare time / our time (1.0 would mean reading, validating and writing were free).
Each of our runs is paired with a bare run just before it (the machine's speed drifts), and the
summary gives the median ratio over the pairs with their range. Targets: >= 0.5 without
drivers, >= 0.7 with. Last, the peak resident memory of a
``crsrisk score`` subprocess on 1M and 4M rows (its own VmHWM, Linux): it should not grow with
the input.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import xgboost as xgb

from _common import best_of
from crsrisk.config import load_train_config
from crsrisk.contract.grading import resolve_labels
from crsrisk.contract.validate import validate
from crsrisk.io import TableWriter
from crsrisk.mlops.loading import load_model
from crsrisk.mlops.registry import connect
from crsrisk.mlops.tracking import log_and_register
from crsrisk.modeling.train import train_models
from crsrisk.scoring.batch import DEFAULT_CHUNK_SIZE, score_file
from crsrisk.simulate.cohort import simulate_cohort

TARGETS = {False: 0.5, True: 0.7}


def train_and_register(folder: Path, n_train: int) -> str:
    """Train training's default XGBoost on a simulated cohort into a store in ``folder``."""
    config = load_train_config()
    config = config.model_copy(update={
        "candidates": ("xgboost",),
        "cv": config.cv.model_copy(update={"folds": 3}),
        "search": config.search.model_copy(update={"xgboost_trials": 1}),
        # XGBoost whatever the cohort's size, on a held-out split, as the bench measures.
        "validation": config.validation.model_copy(update={"design": "split"}),
        "sample_size": config.sample_size.model_copy(update={"force": ("xgboost",)}),
        "tracking": config.tracking.model_copy(update={
            "uri": f"sqlite:///{folder / 'mlflow.db'}",
            "artifact_root": str(folder / "mlartifacts"),
        }),
    })
    valid = validate(simulate_cohort(n_train, seed=11).baseline).valid
    labels = resolve_labels(valid, None)
    result = train_models(valid, labels.severe, config)
    store = connect(config.tracking)
    registered = log_and_register(store, result, config, valid, labels.severe,
                                  {"input_file": "bench", "mapping_fingerprint": "none"})
    os.environ["MLFLOW_TRACKING_URI"] = store.uri
    return registered.model_uri


def write_cohort(path: Path, n: int, block: int = 1_000_000) -> None:
    """``n`` simulated patients (baseline columns only) in blocks, unique ids throughout."""
    with TableWriter(path) as writer:
        for number, start in enumerate(range(0, n, block)):
            size = min(block, n - start)
            baseline = simulate_cohort(size, seed=100 + number).baseline
            baseline = baseline.drop(columns=["crs_max_grade", "crs_grading_scale"])
            baseline["patient_id"] = [f"B{number}-{i:07d}" for i in range(size)]
            writer.write(baseline)


def bare_booster(model, design: pd.DataFrame, drivers: bool) -> Callable[[], object]:
    """The bare booster on the ready-made model matrix: inplace_predict without drivers,
    TreeSHAP ``pred_contribs`` with."""
    booster = model.adapter.booster
    if not drivers:
        return lambda: booster.inplace_predict(design)
    return lambda: booster.predict(xgb.DMatrix(design, enable_categorical=True),
                                   pred_contribs=True)


# The child reports its own high-water mark: rusage's ru_maxrss of a child cannot be used,
# because Linux carries the parent's peak (this process holds the whole model matrix) across
# fork and exec into it.
PEAK_REPORTER = """
import atexit, sys
def report():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stderr.write(f"\\nVmHWM_KiB {kib}\\n")
atexit.register(report)
from crsrisk.cli import app
app(prog_name="crsrisk")
"""


def peak_rss_mb(arguments: list[str]) -> tuple[float, float]:
    """(peak resident MB, seconds) of one `crsrisk` subprocess, from its own VmHWM (Linux)."""
    if not Path("/proc/self/status").exists():
        raise SystemExit("the memory measurement reads /proc/self/status: Linux only")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_REPORTER, *arguments],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"crsrisk {' '.join(arguments)} failed: {done.stderr}")
    kib = int(done.stderr.rsplit("VmHWM_KiB", 1)[1].split()[0])
    return kib / 1024, seconds


def throughput(args: argparse.Namespace, model, folder: Path, parquet: Path, csv: Path,
               started: float) -> None:
    """score_file against the bare booster on the same rows, without and with drivers."""
    frame = pd.read_parquet(parquet)
    if not args.no_csv:
        frame.to_csv(csv, index=False, date_format="%Y-%m-%d")
    design = model.design(validate(frame, with_outcome=False).valid)
    del frame
    booster = model.adapter.booster
    print(f"crsrisk score benchmark: {args.n:,} rows, chunk size {args.chunk_size:,}, "
          f"{os.cpu_count()} CPUs, xgboost {xgb.__version__} "
          f"({booster.num_boosted_rounds()} trees), Python {platform.python_version()}; "
          f"setup {time.perf_counter() - started:.0f} s")

    modes = {"on": [True], "off": [False], "both": [False, True]}[args.drivers]
    inputs = [("Parquet", parquet)] + ([] if args.no_csv else [("CSV", csv)])
    out = folder / "scores.parquet"
    # This small VM's speed drifts by about 20 % over minutes, so each of our runs is paired
    # with a bare run just before it and the ratio is taken per pair; the summary is the
    # median pair with the range of all pairs.
    print(f"{'pair':<44}{'bare s':>8}{'ours s':>8}{'rows/s':>11}{'ratio':>7}")
    ratios: dict[tuple[bool, str], list[float]] = {}
    for drivers in modes:
        bare = bare_booster(model, design, drivers)
        rounds = args.driver_rounds if drivers else args.rounds
        for number in range(1, rounds + 1):
            for name, path in inputs:
                def ours(path: Path = path, drivers: bool = drivers) -> None:
                    score_file(path, out, model=model, drivers=drivers,
                               chunk_size=args.chunk_size, progress=False)
                reference, taken = best_of(1, bare)[0], best_of(1, ours)[0]
                ratios.setdefault((drivers, name), []).append(reference / taken)
                label = f"{name}, {'with' if drivers else 'no'} drivers, round {number}"
                print(f"{label:<44}{reference:>8.2f}{taken:>8.2f}{args.n / taken:>11,.0f}"
                      f"{reference / taken:>7.2f}", flush=True)
    del design

    print(f"\n{'score_file -> Parquet':<34}{'median ratio':>13}{'range':>14}{'target':>8}")
    for (drivers, name), values in ratios.items():
        label = f"{name}, {'with' if drivers else 'no'} drivers ({len(values)} pairs)"
        spread = f"{min(values):.2f}-{max(values):.2f}"
        print(f"{label:<34}{statistics.median(values):>13.2f}{spread:>14}"
              f"{TARGETS[drivers]:>8.2f}")
    print("ratio = bare booster seconds / score_file seconds on the same rows, run back to back "
          "(bare: inplace_predict without drivers, pred_contribs with)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="patients to score")
    parser.add_argument("--train-n", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="pairs (bare, ours) per input without drivers")
    parser.add_argument("--driver-rounds", type=int, default=1,
                        help="pairs per input with drivers (TreeSHAP takes minutes)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--skip-4m", action="store_true", help="no 4M-row memory run")
    parser.add_argument("--no-csv", action="store_true", help="Parquet input only")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory runs")
    parser.add_argument("--drivers", choices=("on", "off", "both"), default="both",
                        help="score_file runs with drivers, without, or both")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="crsrisk-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        model_uri = train_and_register(folder, args.train_n)
        model = load_model(model_uri)
        parquet, csv = folder / "cohort.parquet", folder / "cohort.csv"
        write_cohort(parquet, args.n)
        if not args.memory_only:
            throughput(args, model, folder, parquet, csv, started)

        memory = [(args.n, parquet)]
        if not args.skip_4m:
            big = folder / "cohort4m.parquet"
            write_cohort(big, 4 * args.n)
            memory.append((4 * args.n, big))
        print("\npeak resident memory of `crsrisk score IN.parquet --out OUT.parquet "
              "--no-drivers` (a subprocess):")
        for n, path in memory:
            mb, seconds = peak_rss_mb(["score", str(path), "--out", str(folder / "rss.parquet"),
                                       "--model", model_uri, "--no-drivers", "--chunk-size",
                                       str(args.chunk_size), "--no-progress"])
            print(f"  {n:>10,} rows: {mb:7.0f} MB peak RSS, {seconds:6.1f} s wall")
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  (this benchmark process itself: {own:.0f} MB peak)")


if __name__ == "__main__":
    main()
