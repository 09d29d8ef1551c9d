"""compare_hooks_summary.py DIR [--rate GBIT] [--target ACC] [--runs CSV=SUFFIX ...]: the
table and the plot of compare_hooks.sh's runs (DIR/runs.csv, DIR/unlimited.csv) ->
DIR/summary.md, DIR/accuracy.png.

Per method, over its seeds: final test accuracy (mean and spread: min..max), link bytes a
step (both ranks, the whole run), training time a step, and the training time to reach the
target accuracy (mean over the seeds that reached it; the count of those), and the step of
each seed's first evaluation at or above the target ("-": not reached), which the machine's
load does not change.

--runs (repeatable) reads these CSVs instead of DIR/runs.csv, each method's name followed by
its file's SUFFIX, so that runs of different invocations (machine load differs) stay apart:
e.g. --runs a/runs.csv=" (run 1)" --runs b/runs.csv=" (run 2)".  The unlimited dense run of
each is then the unlimited.csv beside it, compared with "dense" + SUFFIX.  --skip METHOD
(with its suffix) leaves a method out of the table and the plot.
"""
import argparse
import collections
import csv
import os
import statistics


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--rate", default="1")
    ap.add_argument("--target", type=float, default=0.80)
    ap.add_argument("--runs", action="append", metavar="CSV=SUFFIX")
    ap.add_argument("--skip", action="append", default=[], metavar="METHOD",
                    help="leave out this method (its name with the suffix); repeatable")
    ap.add_argument("--title", default="Fashion-MNIST CNN (4.3M parameters), 2 ranks on gloo: "
                    "mean over seeds (band: min..max)")
    args = ap.parse_args()
    sources = [tuple(r.split("=", 1)) if "=" in r else (r, "") for r in args.runs or []] or \
        [(os.path.join(args.dir, "runs.csv"), "")]
    runs = collections.defaultdict(lambda: collections.defaultdict(list))
    order, group = [], {}
    for number, (path, suffix) in enumerate(sources):
        with open(path) as f:
            for method, seed, step, seconds, acc, sent in csv.reader(f):
                method += suffix
                if method in args.skip:
                    continue
                if method not in order:
                    order.append(method)
                    group[method] = number
                runs[method][int(seed)].append((int(step), float(seconds), float(acc),
                                                int(sent)))
    lines = ["| method | final test accuracy, mean (min..max) | link MB a step | s a step | "
             "s to %.0f%% (seeds) | steps to %.0f%% |" % (100 * args.target, 100 * args.target),
             "|---|---|---|---|---|---|"]
    for method in order:
        seeds = runs[method]
        final = [rows[-1][2] for rows in seeds.values()]
        per_step_mb = [rows[-1][3] / rows[-1][0] / 1e6 for rows in seeds.values()]
        per_step_s = [rows[-1][1] / rows[-1][0] for rows in seeds.values()]
        reach = [next((r[1] for r in rows if r[2] >= args.target), None)
                 for rows in seeds.values()]
        reached = [t for t in reach if t is not None]
        steps = [next((r[0] for r in rows if r[2] >= args.target), None)
                 for rows in seeds.values()]
        lines.append("| %s | %.2f%% (%.2f..%.2f) | %.2f | %.3f | %s (%d of %d) | %s |" % (
            method, 100 * statistics.mean(final), 100 * min(final), 100 * max(final),
            statistics.mean(per_step_mb), statistics.mean(per_step_s),
            "%.1f" % statistics.mean(reached) if reached else "not reached", len(reached),
            len(reach), " ".join(str(n) if n else "-" for n in steps)))
    note = ""
    for path, suffix in sources:
        unlimited = os.path.join(os.path.dirname(path), "unlimited.csv")
        if not os.path.exists(unlimited) or "dense" + suffix not in runs:
            continue
        with open(unlimited) as f:
            rows = list(csv.reader(f))
        note += ("\nDense%s without the rate limit (seed 0): %.3f s a step, against %.3f s "
                 "behind the %s Gbit/s link.\n"
                 % (suffix, float(rows[-1][3]) / int(rows[-1][2]),
                    statistics.mean(r[-1][1] / r[-1][0] for r in runs["dense" + suffix].values()),
                    args.rate))
    text = "\n".join(lines) + "\n" + note
    with open(os.path.join(args.dir, "summary.md"), "w") as f:
        f.write(text)
    print(text)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not found: no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8 if len(sources) > 1 else 4.5))
    for method in order:
        seeds = list(runs[method].values())
        n = min(len(r) for r in seeds)
        steps = [seeds[0][i][0] for i in range(n)]
        acc = [statistics.mean(r[i][2] for r in seeds) for i in range(n)]
        lo = [min(r[i][2] for r in seeds) for i in range(n)]
        hi = [max(r[i][2] for r in seeds) for i in range(n)]
        secs = [statistics.mean(r[i][1] for r in seeds) for i in range(n)]
        style = ("-", "--", ":", "-.")[group[method] % 4]
        line, = axes[0].plot(steps, acc, style, label=method)
        axes[0].fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15)
        axes[1].plot(secs, acc, style, label=method, color=line.get_color())
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("training seconds, %s Gbit/s shared link" % args.rate)
    for ax in axes:
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0.5, 0.95)
        ax.axhline(args.target, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    title = args.title
    if len(sources) > 1:  # which line style is which invocation
        title += "\n" + ", ".join("%s:%s" % (("solid", "dashed", "dotted", "dash-dot")[i % 4],
                                             suffix) for i, (_, suffix) in enumerate(sources))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.path.join(args.dir, "accuracy.png"), dpi=110)
    print("plot: %s" % os.path.join(args.dir, "accuracy.png"))


if __name__ == "__main__":
    main()
