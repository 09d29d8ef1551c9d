#!/usr/bin/env python3
"""Summary and plot of examples/fashion_mnist/converge.sh's runs (docs/RESULTS.md).

    tools/converge_plot.py OUT_DIR [NP] [TRAIN_IMAGES] [BATCH] [--order a,b,...] [--markdown]

Reads OUT_DIR/<label>.csv (fmnist_train --csv rows), writes OUT_DIR/summary.csv (per
setting: seeds, final test accuracy mean, sample standard deviation, min and max, the gap
to the "dense" setting, bytes sent per rank in the whole run, warm-up included, and that
against dense; in --order's order, the rest by accuracy), OUT_DIR/accuracy.png (test
accuracy per epoch, mean over seeds, the band one standard deviation either side) and
OUT_DIR/accuracy_vs_bytes.png (final accuracy against the whole run's bytes).
"""
import csv
import glob
import math
import os
import statistics
import sys


def load(path):
    runs = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            runs.setdefault(int(row["seed"]), []).append(row)
    for rows in runs.values():
        rows.sort(key=lambda r: int(r["epoch"]))
    return runs


def main():
    args = sys.argv[1:]
    order = []
    markdown = "--markdown" in args  # the summary as a Markdown table on stdout, no files
    if markdown:
        args.remove("--markdown")
    if "--order" in args:
        at = args.index("--order")
        order = args[at + 1].split(",")
        del args[at:at + 2]
    out = args[0]
    nranks = int(args[1]) if len(args) > 1 else 2
    images = int(args[2]) if len(args) > 2 else 60000
    batch = int(args[3]) if len(args) > 3 else 64
    steps_per_epoch = (images // nranks) // batch
    settings = {}
    for path in sorted(glob.glob(os.path.join(out, "*.csv"))):
        if os.path.basename(path) == "summary.csv":
            continue
        runs = load(path)
        epochs = max(len(r) for r in runs.values())
        runs = {s: r for s, r in runs.items() if len(r) == epochs}  # a run still going: left out
        settings[os.path.basename(path)[:-4]] = runs
    if not settings:
        sys.exit("no runs in %s" % out)

    def final(runs):
        return [float(r[-1]["test_acc"]) for r in runs.values()]

    dense = statistics.mean(final(settings["dense"])) if "dense" in settings else None
    rows = []
    for label, runs in settings.items():
        acc = final(runs)
        last = next(iter(runs.values()))[-1]
        epochs = int(last["epoch"])
        # bytes_per_step is the run's average so far: times the steps, the whole run's bytes
        sent = float(last["bytes_per_step"]) * steps_per_epoch * epochs
        dense_bytes = float(last["dense_bytes_per_step"]) * steps_per_epoch * epochs
        rows.append({
            "setting": label, "seeds": len(acc), "epochs": epochs,
            "test_acc_mean": "%.4f" % statistics.mean(acc),
            "test_acc_std": "%.4f" % (statistics.stdev(acc) if len(acc) > 1 else 0.0),
            "test_acc_min": "%.4f" % min(acc), "test_acc_max": "%.4f" % max(acc),
            "gap_to_dense": "" if dense is None else "%+.4f" % (statistics.mean(acc) - dense),
            "MB_sent_per_rank": "%.1f" % (sent / 1e6),
            "bytes_vs_dense": "%.4f" % (sent / dense_bytes if dense_bytes else 1.0),
        })
    rows.sort(key=lambda r: (order.index(r["setting"]) if r["setting"] in order else len(order),
                             -float(r["test_acc_mean"])))
    if markdown:
        print("| setting | seeds | test acc (mean) | std | min..max | gap to dense | MB sent per rank, whole run | of dense |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print("| %s | %d | %s | %s | %s..%s | %s | %s | %s |" % (
                r["setting"], r["seeds"], r["test_acc_mean"], r["test_acc_std"], r["test_acc_min"],
                r["test_acc_max"], r["gap_to_dense"] or "", r["MB_sent_per_rank"], r["bytes_vs_dense"]))
        return
    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print("%-26s seeds %d  acc %s +- %s  (%s..%s)  gap %6s  %8s MB  %s of dense" % (
            r["setting"], r["seeds"], r["test_acc_mean"], r["test_acc_std"], r["test_acc_min"],
            r["test_acc_max"], r["gap_to_dense"], r["MB_sent_per_rank"], r["bytes_vs_dense"]))

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (apt-get install python3-matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for label in sorted(settings, key=lambda l: (l != "dense", l)):
        runs = settings[label]
        epochs = [int(r["epoch"]) for r in next(iter(runs.values()))]
        per_epoch = list(zip(*[[float(r["test_acc"]) for r in rows] for rows in runs.values()]))
        mean = [statistics.mean(v) for v in per_epoch]
        std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_epoch]
        line, = ax.plot(epochs, mean, label="%s (%d seeds)" % (label, len(runs)),
                        linewidth=2.5 if label == "dense" else 1.5,
                        color="black" if label == "dense" else None)
        ax.fill_between(epochs, [m - s for m, s in zip(mean, std)],
                        [m + s for m, s in zip(mean, std)], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (mean over seeds, band: one standard deviation)")
    ax.set_title(os.path.basename(os.path.normpath(out)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    lo = min(min(float(r["test_acc"]) for rows in runs.values() for r in rows[1:] or rows)
             for runs in settings.values())
    ax.set_ylim(max(0.0, math.floor(lo * 50) / 50), None)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy.png"), dpi=110)
    print("plot: %s" % os.path.join(out, "accuracy.png"))
    bytes_plot(plt, out, rows)


def bytes_plot(plt, out, rows):
    """Final accuracy against the whole run's bytes: the curve for picking a warm-up."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        x, y = float(r["MB_sent_per_rank"]), float(r["test_acc_mean"])
        ax.errorbar([x], [y], yerr=[float(r["test_acc_std"])], fmt="o", capsize=3,
                    color="black" if r["setting"] == "dense" else None)
        ax.annotate("%s (%d)" % (r["setting"], r["seeds"]), (x, y), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("MB sent per rank in the whole run (warm-up included; log scale)")
    ax.set_ylabel("final test accuracy (mean, bar: one standard deviation)")
    ax.set_title(os.path.basename(os.path.normpath(out)) + ": accuracy against bytes")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy_vs_bytes.png"), dpi=110)
    print("plot: %s" % os.path.join(out, "accuracy_vs_bytes.png"))


if __name__ == "__main__":
    main()
