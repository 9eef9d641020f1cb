"""The pre-flight of `make test` and `make up` for a user who cannot set up what is missing: one
line naming the one command to run, before anything else happens (no .venv, no build).

The user is `nobody` on a clean clone: it has no access to the Docker engine, which is what it
lacks here (on a bare host it would lack more; the line names all of it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("su") is None,
                    reason="needs root to run make as another user")
@pytest.mark.parametrize("target", ["test", "up"])
def test_without_root_make_stops_with_one_line_naming_the_command(target: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="exactsum-preflight-"))
    try:
        work.chmod(0o755)
        clone = work / "exactsum"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True,
                       timeout=120)
        subprocess.run(["chown", "-R", "nobody", str(clone)], check=True, timeout=60)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "DOCKER_"))}
        result = subprocess.run(["su", "nobody", "-s", "/bin/bash", "-c", f"make {target}"],
                                cwd=clone, env=env, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        lines = (result.stdout + result.stderr).strip().splitlines()
        assert result.returncode == 2, lines
        assert len(lines) == 1, lines
        assert f"make {target}: missing " in lines[0], lines
        assert "run `sudo make host-setup` once" in lines[0], lines
        assert "Docker engine" in lines[0], lines
        # It stopped before the .venv, the build and everything else.
        assert not (clone / ".venv").exists()
    finally:
        shutil.rmtree(work)
