"""Evaluate the model on both splits with dvclive: metrics in eval/metrics.json, plots under eval/plots/."""

import pickle
import sys
from pathlib import Path

import numpy as np
from dvclive import Live
from sklearn import metrics


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python src/evaluate.py model.pkl data")
    with open(sys.argv[1], "rb") as fd:
        model = pickle.load(fd)  # noqa: S301 - the model the train stage just wrote
    with Live("eval", dvcyaml=False) as live:
        for split, name in (("train", "train.csv"), ("test", "valid.csv")):
            data = np.loadtxt(Path(sys.argv[2]) / name, delimiter=",", skiprows=1)
            labels = data[:, -1].astype(int)
            predictions = model.predict_proba(data[:, :-1])[:, 1]
            live.log_metric(f"avg_prec/{split}", metrics.average_precision_score(labels, predictions), plot=False)
            live.log_metric(f"roc_auc/{split}", metrics.roc_auc_score(labels, predictions), plot=False)
            live.log_sklearn_plot("roc", labels, predictions, name=f"roc/{split}.json")
            live.log_sklearn_plot("confusion_matrix", labels, (predictions > 0.5).astype(int), name=f"cm/{split}.json")


if __name__ == "__main__":
    main()
