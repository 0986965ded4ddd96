"""How long from `python app.py` to a latent map someone can click, against the goal of 15 s.

    python benchmarks/app_startup.py [--runs 3] [--goal 15]

Each run starts `python app.py --port <free port> --no-umap-warmup` from the repo root, polls
the URL until it answers 200 (process start -> HTTP 200), then loads the page in headless
Chromium (launched once, before the clock starts; a fresh context per run, so no cache) and
waits until the left latent map's plotly graph has its points (process start -> first map).
Requests to anything but the app's own server are aborted and counted. The server is killed
after each run. Writes benchmarks/results/app_startup.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_explorer.server.launcher import AppProcess  # noqa: E402  (the one app launcher, shared with the tests)

RESULTS = ROOT / "benchmarks" / "results" / "app_startup.json"
CHROMIUM = "/usr/bin/chromium"

# The left map is drawn: its graph div has a layout and at least one trace with points.
JS_MAP_DRAWN = """() => { const gd = document.querySelector('#map_left .js-plotly-plot');
    return !!(gd && gd._fullLayout && gd._fullData && gd._fullData.length > 0 && gd._fullData[0].x
              && gd._fullData[0].x.length > 0 && gd.querySelector('canvas')); }"""


def one_run(browser, timeout: float, log_path: Path) -> dict:
    external: list[str] = []
    load_before = round(os.getloadavg()[0], 2)  # other work on a small machine skews every number here
    # AppProcess: `python app.py --port <free port> --no-umap-warmup` from the repo root, returned once
    # GET / answers 200; `started` is the clock before the process was started.
    with AppProcess(log_path=log_path, startup_timeout=timeout) as app:
        t_http = app.startup_s
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()

            def route(r):
                if urlsplit(r.request.url).hostname in ("127.0.0.1", "localhost"):
                    r.continue_()
                else:
                    external.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            t_nav = time.perf_counter()
            page.goto(f"{app.url}/", timeout=timeout * 1000)
            page.wait_for_function(JS_MAP_DRAWN, timeout=timeout * 1000, polling=50)
            t_map = time.perf_counter() - app.started
            return {"http_200_s": round(t_http, 3), "first_map_s": round(t_map, 3),
                    "page_to_map_s": round(time.perf_counter() - t_nav, 3), "external_requests": external,
                    "load_avg_1min_before": load_before}
        finally:
            context.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--goal", type=float, default=15.0, help="seconds from process start to the first map")
    p.add_argument("--timeout", type=float, default=120.0, help="give up on a run after this many seconds")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Run as a shell's background job, SIGINT comes ignored, the server would inherit that and
        # ignore the Ctrl-C that AppProcess.stop sends first; a handled signal is reset to the default at exec.
        signal.signal(signal.SIGINT, signal.default_int_handler)

    from playwright.sync_api import sync_playwright

    runs = []
    log_path = ROOT / "artifacts" / "app_startup.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            for i in range(args.runs):
                r = one_run(browser, args.timeout, log_path)
                runs.append(r)
                print(f"run {i + 1}/{args.runs}: HTTP 200 {r['http_200_s']:.2f} s, first map {r['first_map_s']:.2f} s "
                      f"(load average before: {r['load_avg_1min_before']})", flush=True)
        finally:
            browser.close()

    med_map = statistics.median(r["first_map_s"] for r in runs)
    med_http = statistics.median(r["http_200_s"] for r in runs)
    med_page = statistics.median(r["page_to_map_s"] for r in runs)
    result = {
        "command": "python app.py --port <free port> --no-umap-warmup",
        "what": "seconds from process start to HTTP 200, and to the left latent map drawn in headless Chromium",
        "goal_first_map_s": args.goal,
        "median_first_map_s": round(med_map, 3),
        "median_http_200_s": round(med_http, 3),
        "median_page_to_map_s": round(med_page, 3),
        "meets_goal": med_map <= args.goal,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'run':>4} {'HTTP 200 (s)':>13} {'first map (s)':>14} {'page->map (s)':>14} {'load before':>12}")
    for i, r in enumerate(runs, 1):
        print(f"{i:>4} {r['http_200_s']:>13.2f} {r['first_map_s']:>14.2f} {r['page_to_map_s']:>14.2f} "
              f"{r['load_avg_1min_before']:>12.2f}")
    print(f"{'med':>4} {med_http:>13.2f} {med_map:>14.2f} {med_page:>14.2f}")
    verdict = "meets" if result["meets_goal"] else "MISSES"
    print(f"\nmedian first map {med_map:.2f} s: {verdict} the goal of {args.goal:g} s. Results: {args.out}")
    if any(r["external_requests"] for r in runs):
        print("outside requests were attempted (aborted):", sorted({u for r in runs for u in r["external_requests"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
