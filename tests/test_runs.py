"""Run directories: creating one where it cannot be written is a ValueError naming ``out``."""
import json
import os

import pytest

from seqcore.runs import RunDir


def test_create_writes_the_config(tmp_path):
    rd = RunDir(tmp_path / "a" / "b")
    rd.create({"x": 1})
    assert json.loads(rd.config.read_text()) == {"x": 1}


def test_create_under_a_file_names_out(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"^out: got '.*afile/sub', where no run directory can be written "
                                         r"\(Not a directory\)"):
        RunDir(tmp_path / "afile" / "sub").create({})


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_create_in_a_read_only_directory_names_out(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match=r"^out: got .*Permission denied"):
            RunDir(ro / "run").create({})
    finally:
        ro.chmod(0o700)


def test_create_on_a_virtual_file_system_names_out():
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    with pytest.raises(ValueError, match=r"^out: got '/proc/nope'"):
        RunDir("/proc/nope").create({})


def test_damaged_metrics_lines_name_the_file_and_line(tmp_path):
    rd = RunDir(tmp_path)
    rd.metrics.write_text('{"step": 1}\n[2]\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2: got a JSON list, expected one object per line"):
        rd.read_metrics()
    rd.metrics.write_text('{"step": 1}\n{bad\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2: not valid JSON"):
        rd.truncate_metrics(5)
    # a partial last line is what a run killed while appending leaves: work after its checkpoint
    rd.metrics.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    rd.truncate_metrics(2)
    assert rd.read_metrics() == [{"step": 1}, {"step": 2}]


def test_damaged_checkpoint_meta_and_config_name_the_file(tmp_path):
    import numpy as np
    from seqcore.runs import JsonConfig, load_checkpoint, read_json_object, save_checkpoint
    path = tmp_path / "checkpoint.npz"
    np.savez(path, a=np.zeros(2))
    with pytest.raises(ValueError, match=r"checkpoint.npz: unreadable checkpoint \(no __meta__ record"):
        load_checkpoint(path)
    for meta, match in (([1], r"__meta__: got a JSON list, expected an object"),
                        ({"step": -1}, r"__meta__ step: got -1, expected an integer >= 0")):
        save_checkpoint(path, {"a": np.zeros(2)}, meta)
        with pytest.raises(ValueError, match=match):
            load_checkpoint(path)
    (tmp_path / "summary.json").write_text("[1]")
    with pytest.raises(ValueError, match=r"summary.json: got a JSON list, expected an object"):
        read_json_object(tmp_path / "summary.json")
    with pytest.raises(ValueError, match=r"^config: got a list, expected an object of JsonConfig fields"):
        JsonConfig.from_dict([1])
