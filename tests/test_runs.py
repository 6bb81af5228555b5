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
