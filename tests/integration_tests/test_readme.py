"""Every python block of the README runs as written, in order, in one fresh interpreter.

A block that needs what this machine lacks (a server, a package) starts with a
``# requires: <what>`` comment line and is left out; every other block runs.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_blocks() -> tuple[list[str], list[str]]:
    """The README's python blocks that run here, and those that say what they require."""
    blocks = BLOCK.findall((ROOT / "README.md").read_text())
    needing = [b for b in blocks if b.startswith("# requires:")]
    return [b for b in blocks if b not in needing], needing


def test_readme_python_blocks_run_as_written(tmp_path: Path) -> None:
    runnable, needing = readme_blocks()
    assert len(runnable) >= 5, "the README lost its runnable examples"
    assert all(re.match(r"# requires: \S", b) for b in needing)
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(runnable))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(ROOT.glob("*.db")), "a README block left a file in the repository"
