"""The README's first screen and CI stay in sync."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _first_screen_commands():
    text = (ROOT / "README.md").read_text()
    head = text.split("\n---\n")[0]
    blocks = re.findall(r"```bash\n(.*?)```", head, re.S)
    return [ln for b in blocks for ln in b.splitlines() if ln.strip() and not ln.startswith("#")]


def test_first_screen_has_exactly_two_commands():
    cmds = _first_screen_commands()
    assert len(cmds) == 2, cmds
    assert "seqcore train" in cmds[0] and "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim():
    test_cmd = _first_screen_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci
