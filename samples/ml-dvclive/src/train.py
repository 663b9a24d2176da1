"""Train a random forest on the training split; save it with pickle."""

import pickle
import sys
from pathlib import Path

import numpy as np
import yaml
from sklearn.ensemble import RandomForestClassifier


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python src/train.py data/train.csv model.pkl")
    params = yaml.safe_load(Path("params.yaml").read_text())["train"]
    data = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)
    model = RandomForestClassifier(n_estimators=params["n_est"], min_samples_split=params["min_split"],
                                   random_state=params["seed"], n_jobs=1)
    model.fit(data[:, :-1], data[:, -1].astype(int))
    with open(sys.argv[2], "wb") as fd:
        pickle.dump(model, fd)


if __name__ == "__main__":
    main()
