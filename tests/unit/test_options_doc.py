"""docs/options.md is the services' own --help: an option added, renamed or given another
default without `make options-doc` fails here, with the command that fixes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_docs_options_match_help() -> None:
    result = subprocess.run([sys.executable, "scripts/options_doc.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_page_lists_the_options_of_both_services() -> None:
    # The check above compares two texts; this one makes sure the page is not empty of them.
    page = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    for option in ("--count", "--batch", "--transport", "--rq-result-ttl", "PRODUCER_COUNT"):
        assert option in page, option
    for option in ("--grace", "--heartbeat-ttl", "--max-claim", "CONSUMER_THREADS"):
        assert option in page, option
