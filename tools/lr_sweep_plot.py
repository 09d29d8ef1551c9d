#!/usr/bin/env python3
"""Final test accuracy against the learning rate, one line per method, from a summary.csv of
tools/converge_plot.py whose settings are named METHOD@LR (examples/fashion_mnist/
cadamw_study.sh's tuning stage).  Usage: lr_sweep_plot.py SUMMARY_CSV OUT_PNG [TITLE]"""
import csv
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    curves = {}
    with open(argv[1]) as f:
        for row in csv.DictReader(f):
            if "@" not in row["setting"]:
                continue
            method, lr = row["setting"].split("@", 1)
            curves.setdefault(method, []).append((float(lr), float(row["test_acc_mean"])))
    if not curves:
        sys.exit("%s: no METHOD@LR settings" % argv[1])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, points in curves.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final test accuracy")
    ax.set_title(argv[3] if len(argv) > 3 else "learning-rate sweep")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(argv[2], dpi=110)


if __name__ == "__main__":
    main(sys.argv)
