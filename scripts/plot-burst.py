"""Plots scripts/bench-burst's CSV: time until the last app started (and the
ideal time) and amplification against the number of pods, one line per
SSM rate. Usage: plot-burst.py BURST.csv OUT.png"""

import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: plot-burst.py BURST.csv OUT.png")
    rows = defaultdict(list)
    with open(sys.argv[1], newline="") as f:
        for row in csv.DictReader(f):
            rows[float(row["rate"])].append(row)
    fig, (ax_time, ax_amp, ax_fail) = plt.subplots(1, 3, figsize=(15, 4.5))
    for rate, runs in sorted(rows.items()):
        runs.sort(key=lambda r: int(r["pods"]))
        pods = [int(r["pods"]) for r in runs]
        # A run where no pod started has no "last start": left out.
        last = [
            float(r["last_s"]) if int(r["started"]) else float("nan") for r in runs
        ]
        p50 = [float(r["p50_s"]) if int(r["started"]) else float("nan") for r in runs]
        line = ax_time.plot(
            pods, last, marker="o",
            label=f"last app started, {rate:g} SSM reads/s",
        )[0]
        ax_time.plot(
            pods, [float(r["ideal_s"]) for r in runs], linestyle="--",
            color=line.get_color(), label=f"ideal (min calls / rate), {rate:g}/s",
        )
        ax_time.plot(
            pods, p50, linestyle=":",
            color=line.get_color(), label=f"p50 start, {rate:g}/s",
        )
        ax_amp.plot(
            pods, [float(r["amplification"]) for r in runs], marker="o",
            label=f"{rate:g} SSM reads/s",
        )
        ax_fail.plot(
            pods, [int(r["failed_69"]) + int(r["failed_other"]) for r in runs],
            marker="o", label=f"{rate:g} SSM reads/s",
        )
    ax_time.set(xlabel="pods started at once", ylabel="seconds",
                title="Time until the last app started")
    ax_amp.axhline(2.0, color="grey", linestyle="--", label="target (< 2x)")
    ax_amp.set(xlabel="pods started at once", ylabel="calls / minimum calls",
               title="Amplification (SSM + KMS)")
    ax_fail.set(xlabel="pods started at once", ylabel="pods",
                title="Pods failed")
    for ax in (ax_time, ax_amp, ax_fail):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
