"""The dashboard: its events, its JSON and page, and the page in a real browser during a run.

The browser is Debian's Chromium (``apt-get install chromium``) driven by Playwright for Python
(its own browser download is never used). Without it the browser test is skipped locally and
fails under CI=true. ``EXACTSUM_SCREENSHOT=docs/dashboard.png`` also saves the screenshot there.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis

from exactsum.keys import Keys
from observe.dashboard import Poller, changes, create_app
from observe.snapshot import ConsumerView, RunView, Snapshot
from tests.localredis import free_port
from tests.procs import Services, assert_exact, committed, finish, numbers_file, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
QUICK_LIVENESS = ("--heartbeat-ttl", "2", "--block-timeout", "0.5", "--reclaim-interval", "0.5")


def snapshot(reclaimed: int = 0, dead: int = 0, state: str = "pushed",
             alive: bool = True, audit: dict[str, Any] | None = None) -> Snapshot:
    run = RunView("r1", state, 0, 100, 10, 100, 50, dead, 500, 1000, 0, {"c1": 50}, audit)
    consumer = ConsumerView("c1", alive, 0, 1000, inflight_batches=0 if alive else 2)
    return Snapshot(time.time(), "pc", 3, reclaimed, 0, [consumer], [run])


def test_changes_between_two_looks_are_events() -> None:
    before = snapshot()
    after = snapshot(reclaimed=4, dead=10, state="verified", alive=False,
                     audit={"exact": False, "lost": 0, "duplicated": 0})
    kinds = [e["kind"] for e in changes(before, after)]
    assert kinds == ["reclaim", "dead", "fault", "fault"]
    assert changes(before, snapshot()) == []


def test_the_page_and_its_json(client: redis.Redis, keys: Keys) -> None:
    client.lpush(keys.queue, b"x")
    poller = Poller(client, keys, runs=5, interval=1.0)
    poller.poll()

    async def fetch_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(poller))
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as web:
            return [await web.get(path) for path in ("/", "/api/state", "/healthz")]

    page, state, health = asyncio.run(fetch_all())
    assert page.status_code == 200 and "api/state" in page.text
    # No build step and nothing from elsewhere: no external scripts, styles or fonts.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
    assert "@import" not in page.text
    assert state.json()["queue_depth"] == 1 and state.json()["error"] is None
    assert health.status_code == 200


def playwright_or_fail() -> Any:
    """Playwright's sync API, or skip (locally) / fail (CI) when the browser is missing."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is None and not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return sync_playwright


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(120)
def test_dashboard_in_a_real_browser_during_a_run(
    services: Services, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    sync_playwright = playwright_or_fail()
    port = free_port()
    dashboard = services._start("dashboard", "observe.dashboard",
                                ["--port", str(port), "--interval", "0.5"])

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_until(healthy, 20, f"the dashboard ({dashboard.stderr})", interval=0.2)
    work = ("--threads", "2", *QUICK_LIVENESS, "--work-io-ms", "1")
    consumers = [services.consumer(*work) for _ in range(3)]
    victim_id = services.consumer_id(consumers[0])
    client.lpush(keys.queue, b"an element of no run")  # a dead letter to see
    items = 24_000
    path, expected = numbers_file(tmp_path, items)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#conn.ok", timeout=10_000)
            producer = services.producer("--input", str(path), "--batch", "50")
            wait_until(lambda: client.zcard(keys.runs) == 1, 20, "the run")
            run_id = cast(list[bytes], client.zrange(keys.runs, 0, 0))[0].decode()
            row = f'tr[data-run="{run_id}"]'
            page.wait_for_selector(row, timeout=10_000)

            # The numbers move while the run goes on.
            seen_committed, seen_depth = set(), set()
            killed = False
            deadline = time.monotonic() + 60
            while producer.popen.poll() is None and time.monotonic() < deadline:
                seen_committed.add(page.locator(f"{row} td.committed").inner_text())
                seen_depth.add(page.locator("#queue-depth").inner_text())
                if not killed and committed(client, keys) > items // 5 and any(
                        client.llen(keys.inflight(victim_id, n)) for n in range(2)):
                    consumers[0].signal(signal.SIGKILL)
                    killed = True
                time.sleep(0.4)
            assert killed, "the run ended before a consumer could be killed mid-run"
            assert len(seen_committed) >= 3, seen_committed
            assert len(seen_depth) >= 2, seen_depth

            report = finish(producer)
            assert_exact(report, items, expected)
            # At the end the page shows the audit's figures and the faults that happened.
            page.wait_for_selector(f"{row} td.verdict .badge.ok", timeout=10_000)
            assert page.locator(f"{row} td.verdict").inner_text() == "exact"
            assert page.locator(f"{row} td.sum").inner_text() == f"{expected:,}"
            assert page.locator(f"{row} td.expected").inner_text() == f"{expected:,}"
            assert page.locator(f"{row} td.committed").inner_text() == f"{items:,}"
            page.wait_for_selector('#events li[data-kind="reclaim"]', timeout=10_000)
            assert page.locator('#events li[data-kind="dead"]').count() >= 1
            lost = page.locator('#events li[data-kind="fault"]').all_inner_texts()
            assert any(f"consumer {victim_id} lost its heartbeat" in text for text in lost), lost
            assert "lost" in page.locator(f'tr[data-consumer="{victim_id}"]').inner_text()
            reclaimed = int(client.get(keys.reclaimed) or 0)
            assert page.locator("#reclaimed").inner_text() == f"{reclaimed:,}"
            assert page.locator("#foreign-dead").inner_text() == "1"
            for consumer_id, count in report["by_consumer"].items():
                if consumer_id != victim_id:
                    assert page.locator(f'tr[data-consumer="{consumer_id}"]').count() == 1
                    assert count > 0
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("EXACTSUM_SCREENSHOT"):
                shutil.copy(shot, os.environ["EXACTSUM_SCREENSHOT"])
        finally:
            browser.close()
