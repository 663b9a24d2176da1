"""Train a logistic regression on the DVC-tracked data; write metrics.json, model.pkl, plots/."""

import json
import pickle
from pathlib import Path

import numpy as np
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss


def load(name: str):
    data = np.loadtxt(Path("data") / name, delimiter=",", skiprows=1)
    return data[:, :-1], data[:, -1].astype(int)


def main() -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())["train"]
    x_train, y_train = load("train.csv")
    x_valid, y_valid = load("valid.csv")
    model = LogisticRegression(C=float(params["C"]), max_iter=int(params["max_iter"]))
    model.fit(x_train, y_train)
    proba = model.predict_proba(x_valid)
    pred = proba.argmax(axis=1)
    metrics = {"accuracy": round(float(accuracy_score(y_valid, pred)), 6),
               "f1": round(float(f1_score(y_valid, pred)), 6),
               "log_loss": round(float(log_loss(y_valid, proba)), 6)}
    Path("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    Path("model.pkl").write_bytes(pickle.dumps(model))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Path("plots").mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.hist([proba[y_valid == 0, 1], proba[y_valid == 1, 1]], bins=20, label=["class 0", "class 1"])
    ax.set_xlabel("P(class 1)")
    ax.legend()
    fig.tight_layout()
    fig.savefig("plots/scores.png")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
