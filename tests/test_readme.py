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


def _python_blocks():
    """Every ```python block of the README as a script: a block that starts with
    "# continues the example above" runs after the one before it."""
    import textwrap
    text = (ROOT / "README.md").read_text()
    blocks, prev = [], ""
    for m in re.finditer(r"```python\n(.*?)```", text, re.S):
        code = textwrap.dedent(m.group(1))
        code = prev + code if code.startswith("# continues the example above") else code
        prev = code
        blocks.append((text[:m.start()].count("\n") + 1, code))
    return blocks


# needs the Fashion-MNIST files and minutes: the same run_continual path runs on synthetic data
# in tests/test_continual.py
NOT_RUN = ('dataset="fashion-mnist"',)


def test_readme_python_examples_run(tmp_path):
    import subprocess
    import sys
    blocks = [(line, code) for line, code in _python_blocks() if not any(marker in code for marker in NOT_RUN)]
    assert len(blocks) >= 10
    for line, code in blocks:
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"README.md:{line}: {result.stderr[-2000:]}"
