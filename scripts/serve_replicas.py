"""Several app replicas over one checkpoints folder behind the sticky demo proxy, on this machine: what the
README's "Serving a class" sets up with nginx, to try it without one. Ctrl-C stops everything.

    python scripts/serve_replicas.py --replicas 2 --port 8000 [--checkpoints DIR] [-- more app.py flags]
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vae_explorer.server.launcher import Replicas  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=2, help="app processes to start (default 2)")
    p.add_argument("--port", type=int, default=8000, help="the proxy's port: the one URL to give out")
    p.add_argument("--host", default="127.0.0.1", help="the proxy's interface (the replicas stay on 127.0.0.1)")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"),
                   help="the folder every replica reads and trains into")
    p.add_argument("app_args", nargs="*", help="more flags for every app.py, after --")
    args = p.parse_args(argv)
    if args.replicas < 1:
        p.error("--replicas must be at least 1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # Stop the replicas on SIGTERM too (a service manager, `kill`), and on Ctrl-C even when started from a
    # script that ignores SIGINT for background jobs: the replicas run in their own sessions and would outlive us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"starting {args.replicas} replicas over {args.checkpoints} (about 10 s each, in parallel)…", flush=True)
    with Replicas(args.replicas, args.checkpoints, proxy_port=args.port, proxy_host=args.host,
                  extra_args=tuple(args.app_args)) as replicas:
        for i, app in enumerate(replicas.apps):
            print(f"  replica {i}: {app.url} (log {app.log_path})")
        print(f"serving on {replicas.url} (proxy log {replicas.proxy.log_path}); Ctrl-C stops all", flush=True)
        try:
            while all(a.proc.poll() is None for a in [*replicas.apps, replicas.proxy]):
                time.sleep(1)
            print("a process ended; stopping the others", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
