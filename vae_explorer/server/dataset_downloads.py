"""Dataset downloads the page starts: one background thread per dataset, its state polled by the page
(the Train tab's way: a status line redrawn twice a second while something runs)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..data import DataNotFound
from ..data.downloads import DOWNLOAD_BYTES, DOWNLOADABLE, download, downloaded_bytes, is_present


@dataclass
class DownloadState:
    status: str  # "running", "ready" or "failed"
    message: str = ""
    started: float = 0.0
    finished: float | None = None


class DatasetDownloads:
    """The downloads of one data folder: start one per dataset, ask how it is going."""

    def __init__(self, data_root: str | None):
        self.data_root = data_root
        self._lock = threading.Lock()
        self._states: dict[str, DownloadState] = {}

    def start(self, name: str) -> DownloadState:
        """Start fetching `name` unless it is there or already coming; its state either way."""
        with self._lock:
            state = self._states.get(name)
            if state is not None and state.status == "running":
                return state
            if is_present(name, self.data_root):
                state = self._states[name] = DownloadState("ready", started=time.time(), finished=time.time())
                return state
            state = self._states[name] = DownloadState("running", started=time.time())
        threading.Thread(target=self._run, args=(name, state), name=f"download-{name}", daemon=True).start()
        return state

    def _run(self, name: str, state: DownloadState) -> None:
        try:
            download(name, self.data_root)
            state.status = "ready"
        except DataNotFound as e:
            state.status, state.message = "failed", str(e)
        except Exception as e:  # the thread must say what happened: nothing else would
            state.status, state.message = "failed", f"{type(e).__name__}: {e}"
        state.finished = time.time()

    def state(self, name: str) -> DownloadState | None:
        """The latest download of `name` on this server (None: none was started)."""
        return self._states.get(name)

    def progress(self, name: str) -> tuple[int, int]:
        """(bytes in the folder so far, bytes expected in all)."""
        return downloaded_bytes(name, self.data_root), DOWNLOAD_BYTES[name]

    @staticmethod
    def title(name: str) -> str:
        return DOWNLOADABLE.get(name, name)
