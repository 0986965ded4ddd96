"""The server's malloc settings (vae_explorer/server/allocator.py): set on glibc, the operator's environment kept."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from vae_explorer.server.allocator import ARENAS, MMAP_THRESHOLD

from .conftest import REPO

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's parameters are glibc's")

PROBE = ("import json; from vae_explorer.server.allocator import tune_allocator; "
         "print(json.dumps(tune_allocator()))")


def _tuned(env: dict) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.strip()


@glibc
def test_both_settings_are_made_where_the_environment_sets_neither():
    assert _tuned({}) == f'{{"MALLOC_ARENA_MAX": {ARENAS}, "MALLOC_MMAP_THRESHOLD_": {MMAP_THRESHOLD}}}'


@glibc
def test_an_operators_environment_is_left_alone():
    assert _tuned({"MALLOC_ARENA_MAX": "8"}) == f'{{"MALLOC_MMAP_THRESHOLD_": {MMAP_THRESHOLD}}}'
    assert _tuned({"MALLOC_ARENA_MAX": "8", "MALLOC_MMAP_THRESHOLD_": "65536"}) == "{}"


def test_the_app_tunes_the_allocator_first(monkeypatch):
    import app

    calls = []
    monkeypatch.setattr(app, "tune_allocator", lambda: calls.append("tune_allocator"))
    monkeypatch.setattr(app, "load_plugins", lambda: calls.append("load_plugins"))
    with pytest.raises(SystemExit):  # a refused flag ends main after its first steps, before any server
        app.main(["--loaded-models", "0"])
    assert calls == ["tune_allocator", "load_plugins"]
