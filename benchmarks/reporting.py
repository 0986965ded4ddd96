"""What the benchmark scripts share: naming the machine, and writing a result as Markdown plus the
JSON it was made from (so a report can be rewritten without measuring again)."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name and core count, as /proc/cpuinfo gives it (the architecture elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.machine()


def write_report(text: str, saved: dict, out: Path) -> int:
    """Print the Markdown report, write it to `out` and the data beside it as JSON; returns 0 (an exit code)."""
    print()
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(saved, indent=1) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json').name}")
    return 0
