"""The `optimlab` command's process end: coordinating commands skip the interpreter's teardown, not its atexit handlers."""

from __future__ import annotations

import os
import subprocess
import sys


def test_quick_exit_runs_atexit_handlers_and_keeps_output_and_exit_code(tmp_path):
    marker = tmp_path / "atexit-ran"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(f"import atexit, pathlib\natexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n")
    env = {**os.environ, "OPTIMLAB_PLUGINS": str(plugin)}
    result = subprocess.run([sys.executable, "-m", "optimlab", "compare", "optims=[no_such_optimizer]", f"root={tmp_path}"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "no_such_optimizer" in result.stderr
    assert marker.read_text() == "yes"
