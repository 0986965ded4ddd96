"""UMAP maps of latent codes, fitted off the request path.

UMAP is slow to start (numba compiles for about a minute in a fresh process on
a small CPU), so it runs in one background worker process that is warmed up at
start, never in a request; results are cached on disk per checkpoint contents,
and the shipped checkpoints ship theirs. PCA is instant and shows meanwhile.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np

# n_epochs 200 and a PCA start: 3-4 s instead of 9-10 s for 10,000 codes here, and the same picture.
UMAP_SETTINGS = {"n_components": 2, "n_neighbors": 15, "min_dist": 0.1, "n_epochs": 200, "init": "pca"}
UMAP_TAG = "umap-" + hashlib.sha256(json.dumps(UMAP_SETTINGS, sort_keys=True).encode()).hexdigest()[:8]


def umap_reducer(codes: np.ndarray, seed: int = 0):
    """A umap.UMAP fitted to (N, D) codes (runs in the worker process); its `embedding_` is the map."""
    import umap  # imported here: 3-30 s, and only the worker pays it

    settings = {**UMAP_SETTINGS, "n_neighbors": int(min(UMAP_SETTINGS["n_neighbors"], max(2, len(codes) - 1)))}
    if len(codes) <= settings["n_components"] + 1:
        settings["init"] = "random"  # PCA needs more points than dimensions
    reducer = umap.UMAP(random_state=seed, **settings)
    reducer.fit(np.asarray(codes, np.float32))
    return reducer


def umap_fit(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) UMAP embedding (runs in the worker process)."""
    return umap_reducer(codes, seed).embedding_.astype(np.float32)


def umap_inverse(reducer, embedding: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(M, 2) map points -> (M, D) codes by umap-learn's `inverse_transform`, taken against `embedding`, the
    map the page shows (a cached map from another process may differ from this fit in the last digits)."""
    reducer.embedding_ = np.asarray(embedding, np.float32)
    return np.asarray(reducer.inverse_transform(np.asarray(points, np.float32)), np.float32)


class _Worker:
    """`python -m vae_explorer.server.umap_worker`: a long-lived subprocess that fits UMAPs one at a
    time. A plain subprocess, not multiprocessing's spawn, which would re-import the
    server's main module (gradio and all) in the child."""

    def __init__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="vae-explorer-umap-")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "vae_explorer.server.umap_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, cwd=str(Path(__file__).resolve().parents[2]))
        self._futures: dict[int, Future] = {}
        self._next = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True, name="umap-reader").start()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def submit(self, codes: np.ndarray | None, inverse: tuple[str, np.ndarray, np.ndarray] | None = None) -> Future:
        """Fit UMAP to `codes` (None: a small warm-up fit); the future's result is the (N, 2) embedding.
        inverse: (the codes' key, the shown (N, 2) map, (M, 2) points): the result is instead the points'
        (M, D) codes by umap-learn's inverse_transform (the worker keeps the last fits for this)."""
        future: Future = Future()
        with self._lock:
            job, self._next = self._next, self._next + 1
            src, dst = Path(self._tmp.name) / f"{job}.in.npy", Path(self._tmp.name) / f"{job}.out.npy"
            if codes is not None:
                np.save(src, np.asarray(codes, np.float32))
            request = {"id": job, "in": str(src) if codes is not None else None, "out": str(dst)}
            if inverse is not None:
                key, embedding, points = inverse
                request["key"] = key
                for what, array in (("embedding", embedding), ("points", points)):
                    request[what] = str(Path(self._tmp.name) / f"{job}.{what}.npy")
                    np.save(request[what], np.asarray(array, np.float32))
            self._futures[job] = future
            try:
                self._proc.stdin.write(json.dumps(request) + "\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._futures.pop(job, None)
                future.set_exception(RuntimeError("the UMAP worker process is not running"))
        return future

    def _read(self) -> None:
        for line in self._proc.stdout:
            try:
                reply = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._lock:
                future = self._futures.pop(reply.get("id"), None)
            if future is None:
                continue
            if reply.get("error"):
                future.set_exception(RuntimeError(reply["error"]))
            else:
                try:
                    future.set_result(np.load(reply["out"], allow_pickle=False))
                except (OSError, ValueError) as e:
                    future.set_exception(e)
        with self._lock:  # the worker died: fail whatever was waiting
            for future in self._futures.values():
                future.set_exception(RuntimeError("the UMAP worker process ended unexpectedly"))
            self._futures.clear()

    def close(self) -> None:
        if self.alive():
            self._proc.kill()
            self._proc.wait()
        self._tmp.cleanup()


class UmapProjector:
    """Cached, non-blocking UMAP: `get` returns the embedding, or None while it is computed."""

    def __init__(self, cache_dir: str | Path | None):
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._jobs: dict[str, Future] = {}
        self._errors: dict[str, str] = {}
        self._memory: dict[str, np.ndarray] = {}

    def _submit(self, codes: np.ndarray | None, inverse=None) -> Future:
        if self._worker is None or not self._worker.alive():
            self._worker = _Worker()
        return self._worker.submit(codes, inverse)

    def warm_up(self) -> Future:
        """Start the worker and compile UMAP's numba code now (about a minute of CPU on a small
        machine), so the first real request is fast; the future resolves when it is done."""
        with self._lock:
            return self._submit(None)

    def cache_file(self, key: str) -> Path | None:
        # The settings' tag is in the name: changing UMAP_SETTINGS never reuses a stale picture.
        return self.cache_dir / f"{key}.{UMAP_TAG}.npy" if self.cache_dir else None

    def get(self, key: str, codes: np.ndarray) -> np.ndarray | None:
        """The embedding of `codes` (identified by `key`), or None and a fit started in the background."""
        with self._lock:
            if key in self._memory:
                return self._memory[key]
            path = self.cache_file(key)
            if path is not None and path.is_file():
                try:
                    emb = np.load(path, allow_pickle=False)
                    if emb.shape == (len(codes), 2):
                        self._memory[key] = emb
                        return emb
                except (OSError, ValueError):
                    pass  # a damaged cache file: compute again
            if key in self._errors:
                return None
            job = self._jobs.get(key)
            if job is None:
                self._jobs[key] = job = self._submit(codes)
            if not job.done():
                return None
            del self._jobs[key]
            try:
                emb = job.result()
            except Exception as e:  # the worker died or umap failed: say so
                self._errors[key] = f"{type(e).__name__}: {e}"
                return None
            self._memory[key] = emb
            if path is not None:
                try:
                    save_map(path, emb)
                except OSError:
                    pass  # read-only checkpoints folder: keep it in memory only
            return emb

    def inverse(self, key: str, codes: np.ndarray, embedding: np.ndarray, points: np.ndarray,
                timeout: float = 300.0) -> np.ndarray:
        """(M, 2) points of the map `embedding` of `codes` -> (M, D) codes, by umap-learn's inverse_transform in
        the worker (blocking: seconds; the worker's first inverse compiles for longer). The worker refits UMAP
        the first time a set of codes is inverted (the same seed and settings as the map) and keeps it."""
        with self._lock:
            job = self._submit(codes, (key, embedding, points))
        return job.result(timeout=timeout)

    def error(self, key: str) -> str | None:
        return self._errors.get(key)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


def save_map(path: Path, emb: np.ndarray) -> None:
    """Write-then-rename under a temporary name of its own: replicas of the app sharing the checkpoints folder
    may save the same map at once, and a reader must never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as f:
            np.save(f, emb)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the map from replicas run by other users
        Path(tmp).replace(path)
    finally:
        Path(tmp).unlink(missing_ok=True)


KEPT_REDUCERS = 4  # fitted UMAPs the worker keeps for inverse_transform (the maps on screen)


def _serve() -> None:
    """The worker's loop: one JSON request per stdin line, one JSON reply per stdout line."""
    reducers: dict[str, object] = {}  # codes' key -> fitted UMAP, oldest first
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request.get("points"):
                key = request["key"]
                reducer = reducers.pop(key, None)
                if reducer is None:
                    reducer = umap_reducer(np.load(request["in"], allow_pickle=False))
                reducers[key] = reducer
                while len(reducers) > KEPT_REDUCERS:
                    reducers.pop(next(iter(reducers)))
                emb = umap_inverse(reducer, np.load(request["embedding"], allow_pickle=False),
                                   np.load(request["points"], allow_pickle=False))
            elif request["in"] is None:  # warm-up: small sets, then one past 4096 points, where UMAP
                rng = np.random.default_rng(0)  # switches to its approximate neighbour search
                for n in (300, 5000):
                    emb = umap_fit(rng.normal(size=(n, 8)).astype(np.float32))
            else:
                emb = umap_fit(np.load(request["in"], allow_pickle=False))
            np.save(request["out"], emb)
            reply = {"id": request["id"], "out": request["out"]}
        except Exception as e:
            reply = {"id": request["id"], "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
