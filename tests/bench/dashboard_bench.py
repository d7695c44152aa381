"""Dashboard page weight and render time (a script, not a test).

    .venv/bin/python tests/bench/dashboard_bench.py [--runs 1000] [--repeat 5]

Starts a fresh ``hewer dev`` (``HEWER_DASHBOARD_AUTH=none``), registers a one-task workflow
and triggers ``--runs`` runs through the REST API (no worker: they stay queued), then prints

1. the weight of the runs list as a browser loads it (HTML of the default page of 50 runs,
   the stylesheet, the script, the icon), raw and as sent (gzip), against 200 KB;
2. the server's time to render the list of all ``--runs`` runs on one page (median of
   ``--repeat``), and that page's size;
3. with ``/usr/bin/chromium``: the browser's time from navigation to the load event for that
   page (median of ``--repeat``), against 1 s.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE.parent / "e2e", HERE.parent):
    sys.path.insert(0, str(p))

import requests  # noqa: E402
from e2e_support import start_engine  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
WORKFLOW = "dash-bench"


def _fetch(url: str) -> tuple[int, int, float]:
    """``(bytes as sent, bytes decoded, seconds)``; gzip accepted, as a browser would."""
    started = time.perf_counter()
    r = requests.get(url, headers={"Accept-Encoding": "gzip"}, stream=True, timeout=60)
    sent = r.raw.read(decode_content=False)
    elapsed = time.perf_counter() - started
    r.raise_for_status()
    encoded = r.headers.get("Content-Encoding") == "gzip"
    if encoded:
        import gzip

        body = gzip.decompress(sent)
    else:
        body = sent
    return len(sent), len(body), elapsed


def _populate(base: str, token: str, tenant: str, runs: int) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    s = requests.Session()
    s.headers.update(auth)
    definition = {
        "name": WORKFLOW,
        "tasks": [{"readable_id": "step", "action": f"{WORKFLOW}:step"}],
    }
    r = s.put(
        f"{base}/api/v1/hewer/tenants/{tenant}/declared-workflows/{WORKFLOW}",
        json={"resource": "bench/dash", "definition": definition},
    )
    r.raise_for_status()
    for i in range(runs):
        r = s.post(
            f"{base}/api/v1/stable/tenants/{tenant}/workflow-runs/trigger",
            json={"workflowName": WORKFLOW, "input": {"i": i}, "additionalMetadata": {"n": i}},
        )
        r.raise_for_status()


def _browser_ms(url: str, repeat: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 860})
        page.goto(url)  # warm: the stylesheet and script are cached afterwards, as in use
        for _ in range(repeat):
            page.goto(url, wait_until="load")
            nav = page.evaluate(
                "(() => { const n = performance.getEntriesByType('navigation')[0];"
                " return n.loadEventEnd - n.startTime; })()"
            )
            out.append(float(nav))
        rows = page.locator("table.runs tbody tr").count()
        browser.close()
    print(f"   rows in the browser's table: {rows}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with start_engine({"HEWER_DASHBOARD_AUTH": "none", "HEWER_LOG_LEVEL": "WARNING"}) as engine:
        base, token, tenant = engine.server_url, engine.token, engine.tenant_of()
        started = time.perf_counter()
        _populate(base, token, tenant, args.runs)
        print(f"populated {args.runs} runs in {time.perf_counter() - started:.1f} s")

        html_sent, html_raw, _ = _fetch(f"{base}/runs?range=all")
        page = requests.get(f"{base}/runs?range=all", timeout=30).text
        assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
        total_sent, total_raw = html_sent, html_raw
        for asset in assets:
            sent, raw, _ = _fetch(base + asset)
            total_sent += sent
            total_raw += raw
        print(
            "1. runs list (default page of 50 runs), HTML + "
            + ", ".join(a.split("?")[0].rsplit("/", 1)[-1] for a in assets)
        )
        print(
            f"   {total_raw / 1024:.1f} KB raw, {total_sent / 1024:.1f} KB sent  (target < 200 KB)"
        )

        url = f"{base}/runs?range=all&limit=1000"
        times, sizes = [], []
        for _ in range(args.repeat):
            sent, raw, seconds = _fetch(url)
            times.append(seconds * 1000)
            sizes.append((sent, raw))
        sent, raw = sizes[-1]
        print(
            f"2. server, {args.runs} runs on one page: median {statistics.median(times):.0f} ms"
            f" (min {min(times):.0f}, max {max(times):.0f}); {raw / 1024:.1f} KB raw,"
            f" {sent / 1024:.1f} KB sent"
        )

        if CHROMIUM.exists():
            ms = _browser_ms(url, args.repeat)
            print(
                f"3. chromium, navigation to load event for {args.runs} runs: median"
                f" {statistics.median(ms):.0f} ms (min {min(ms):.0f}, max {max(ms):.0f})"
                f"  (target < 1000 ms)"
            )
        else:
            print(f"3. skipped: no {CHROMIUM}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
