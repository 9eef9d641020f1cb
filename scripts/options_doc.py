"""Write docs/options.md from the services' own ``--help``, so the options' documentation cannot
drift from the code: ``python scripts/options_doc.py`` (``make options-doc``) rewrites it,
``--check`` exits 1 when the committed file differs (tests/unit/test_options_doc.py runs that).

``--help`` is taken with no service variable set (a variable replaces the default that ``--help``
shows) and 100 columns wide.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "options.md"

# (title, module) of every command whose options the page lists.
COMMANDS = [
    ("The producer", "producer_service"),
    ("The consumer", "consumer_service"),
    ("Status", "observe.status"),
    ("The dashboard", "observe.dashboard"),
]

HEADER = """\
# Options

Every option of the services and tools, as their `--help` prints it. Every option has an
environment variable, shown as `[env: ...]`: a flag on the command line wins over the variable,
the variable over the default. In compose, the variables come from the environment or from
`.env` (`.env.example` lists them); a variable left unset keeps the default shown here.

This page is generated from `--help` by `make options-doc` (`scripts/options_doc.py`); a test
fails when it and `--help` differ.
"""


def help_text(module: str) -> str:
    env = {"PATH": os.environ.get("PATH", ""), "COLUMNS": "100", "LANG": "C.UTF-8"}
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    return "\n".join(line.rstrip() for line in result.stdout.strip().splitlines())


def render() -> str:
    parts = [HEADER]
    for title, module in COMMANDS:
        parts.append(f"## {title}: `python -m {module}`\n\n```text\n{help_text(module)}\n```\n")
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            sys.stderr.write(f"{DOC.relative_to(ROOT)} differs from --help: make options-doc\n")
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
