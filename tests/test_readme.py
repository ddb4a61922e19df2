"""The README's Python example runs as printed."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_use_from_python_example_runs(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    env["ROSETTA_CURATE_CACHE"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    kept = int(done.stdout.split(" documents kept")[0].split()[-1])
    assert kept > 0 and done.stdout.strip().endswith(str(kept))
    assert (tmp_path / "demo-out" / "py-kept" / "manifest.json").is_file()
