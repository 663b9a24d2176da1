"""The suite's shard split (tests/support/shards.py): every unit runs exactly once, the shards balanced."""

from tests.support.shards import DURATIONS, NEEDS_MLFLOW, SHARDS, split, units


def test_every_unit_runs_once_and_the_shards_are_balanced():
    found = units()
    assert "tests/unit" in found and "tests/integration/flows/test_demo.py" in found
    durations = {u: float(i + 1) for i, u in enumerate(found)}
    groups = split(found, 2, durations, together=())
    assert sorted(u for g in groups for u in g) == sorted(found)
    loads = [sum(durations[u] for u in g) for g in groups]
    assert max(loads) - min(loads) <= max(durations.values())  # greedy: within one unit of each other


def test_fewer_units_than_shards_gives_no_empty_shard():
    assert split(["a", "b"], 3, {"a": 1, "b": 2}) == [["b"], ["a"]]


def test_the_mlflow_tests_share_one_shard_and_the_measured_split_stays_balanced():
    found = units()
    assert set(NEEDS_MLFLOW) <= set(found)
    groups = split(found, SHARDS)
    assert set(NEEDS_MLFLOW) <= set(groups[0]) and not any(set(NEEDS_MLFLOW) & set(g) for g in groups[1:])
    loads = [sum(DURATIONS.get(u, 5) for u in g) for g in groups]
    assert max(loads) - min(loads) <= 60
