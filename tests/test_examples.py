"""The reproduction scripts' table arithmetic, on hand-made run directories."""
import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tables():
    return load_example("continual_tables")


def write_run(path, summary, records=()):
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_gap_table_reads_the_dip_the_recovery_and_the_end(tmp_path, tables):
    # experience 1 ends at 0.80; in experience 2 it dips to 0.60 after 10 updates, is back
    # within 0.03 (>= 0.77) at update 20, and ends at 0.75
    acc1 = {0: 0.80, 5: 0.70, 10: 0.60, 15: 0.76, 20: 0.78, 25: 0.75}
    records = [{"iteration": 95, "experience": 0, "accuracy": [0.79]},
               {"iteration": 100, "experience": 0, "accuracy": [0.80]}]
    records += [{"iteration": 100 + s, "experience": 1, "accuracy": [a, 0.1]} for s, a in acc1.items()]
    write_run(tables.run_dir(tmp_path, "gap", "replay", 0), {"status": "completed"}, records)
    write_run(tables.run_dir(tmp_path, "gap", "naive", 0), {"status": "failed"}, records)  # not completed: left out
    text, curves = tables.gap_table(tmp_path, 0)
    rows = [line for line in text.splitlines() if line.startswith("| ER")]
    assert rows == ["| ER | 0.800 | 0.600 (after 10 updates) | 20 | 0.750 |"]
    assert list(curves) == ["ER"]
    assert curves["ER"] == (list(acc1), list(acc1.values()))


def test_gap_table_says_never_when_accuracy_does_not_come_back(tmp_path, tables):
    records = [{"iteration": 10 + s, "experience": 1, "accuracy": [a, 0.2]} for s, a in ((0, 0.9), (5, 0.5), (10, 0.6))]
    write_run(tables.run_dir(tmp_path, "gap", "naive", 0), {"status": "completed"}, records)
    text, _ = tables.gap_table(tmp_path, 0)
    assert "| naive | 0.900 | 0.500 (after 5 updates) | never | 0.600 |" in text


def test_metric_table_gives_mean_and_sample_sd_over_completed_seeds(tmp_path, tables):
    keys = tables.METRICS
    for seed, base in ((0, 0.5), (1, 0.7)):
        write_run(tables.run_dir(tmp_path, "sgd", "ewc", seed),
                  {"status": "completed", "wall_time_s": 10 + 20 * seed, **{k: base for k in keys}})
    write_run(tables.run_dir(tmp_path, "sgd", "si", 0), {"status": "completed", "wall_time_s": 3,
                                                          **{k: -0.25 for k in keys}})
    text = tables.metric_table(tmp_path, "sgd", [0, 1])
    ewc = next(line for line in text.splitlines() if line.startswith("| EWC"))
    # mean 0.6, sample standard deviation sqrt(2 * 0.1**2 / 1) = 0.141; mean wall 20 s
    assert ewc == "| EWC | `--strength 1` | 2 | " + " | ".join(["0.600 ± 0.141"] * len(keys)) + " | 20 |"
    si = next(line for line in text.splitlines() if line.startswith("| SI"))
    assert si.endswith("| 1 | " + " | ".join(["−0.250"] * len(keys)) + " | 3 |")
    naive = next(line for line in text.splitlines() if line.startswith("| naive"))
    assert "| 0 |" in naive


def test_every_table_entry_is_a_valid_config(tables):
    from seqcore.continual import ContinualConfig
    for table, (changes, rows) in tables.TABLES.items():
        for label, name, learner, kwargs, extra, _ in rows:
            cfg = ContinualConfig(**{**tables.PROTOCOL, **changes, **extra}, learner=learner, learner_kwargs=kwargs)
            assert cfg.learner == learner, (table, label)
