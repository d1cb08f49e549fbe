"""Draw a training run's learning curve from its train_log.jsonl: loss and train accuracy per iteration,
and validation rank-1 (NM / BG / CL, identical views excluded) at every validation.

    python bench/learning_curve.py runs/NAME/train_log.jsonl out.png [--title TEXT]

A resumed run may log an iteration twice (the steps after its last checkpoint are redone): the last
record of each iteration wins.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CONDITIONS = ("NM", "BG", "CL")
COLOURS = {"NM": "tab:green", "BG": "tab:orange", "CL": "tab:red"}


def read_log(path: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    steps, validations = {}, {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "validation" in record:
            validations[record["iteration"]] = record["validation"]
        else:
            steps[record["iteration"]] = record
    return dict(sorted(steps.items())), dict(sorted(validations.items()))


def draw(steps: dict[int, dict], validations: dict[int, dict], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    its = list(steps)
    loss_ax.plot(its, [steps[i]["loss"] for i in its], color="tab:blue", label="loss (triplet + CE)")
    loss_ax.plot(its, [steps[i]["triplet"] for i in its], color="tab:purple", alpha=0.6, label="triplet")
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel("loss")
    acc_ax = loss_ax.twinx()
    acc_ax.plot(its, [steps[i]["train_acc"] for i in its], color="grey", alpha=0.5, label="train accuracy")
    acc_ax.set_ylabel("train accuracy (BNNeck classifier)")
    acc_ax.set_ylim(0, 1)
    loss_ax.legend(loc="upper right", fontsize=8)
    loss_ax.set_title("training")
    for metric, style in (("cosine", "-"), ("euclidean", "--")):
        points = {i: v[metric] for i, v in validations.items() if metric in v}
        for condition in CONDITIONS:
            if points:
                val_ax.plot(list(points), [p[condition]["rank1"] for p in points.values()], style, marker="o",
                            color=COLOURS[condition], label=f"{condition} ({metric})")
    val_ax.set_xlabel("iteration")
    val_ax.set_ylabel("rank-1 % (identical views excluded)")
    val_ax.set_ylim(0, 100)
    val_ax.grid(True, alpha=0.3)
    val_ax.legend(loc="lower right", fontsize=8, ncol=2)
    val_ax.set_title("validation")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    steps, validations = read_log(args.log)
    print(draw(steps, validations, args.out, args.title or str(args.log.parent.name)))


if __name__ == "__main__":
    main()
