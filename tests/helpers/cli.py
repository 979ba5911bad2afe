"""The `sonicsort` command as a user runs it: a real process."""

from __future__ import annotations

import subprocess
import sys



# ---------------------------------------------------------------- catalogs, libraries and the CLI
CLI = [sys.executable, "-m", "api.cli"]


def run_cli(args, env, **kw):
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=300, **kw)
