"""Starting the app for tests, benchmarks and extra replicas: a free port, the
real app in this process (`serve`), or `python app.py` in its own process group
(`AppProcess`), stopped with everything it started; several of them behind the demo proxy
(`Replicas`)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # where app.py is


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(explorer, **launch_settings):
    """The real app over `explorer`, in this process on a free port of 127.0.0.1 (`launch_settings` go to
    `app.launch`): yields its URL, closes the app and the explorer's processes after."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import app

    demo = app.build_app(explorer)
    port = free_port()
    app.launch(demo, port=port, prevent_thread_lock=True, quiet=True, **launch_settings)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()
        explorer.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class ProcessGroup:
    """A server started in its own process group (`proc`, `url`, `log_path`, `_log`): waiting until "/" answers,
    its log, and stopping it with everything it started."""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[1:3]} exited with code {self.proc.returncode}:\n{self.log_tail()}")
            if _answers(f"{self.url}/"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.proc.args[1:3]} did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Ctrl-C first, as a person would (the app then closes its workers), then harder signals."""
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                try:
                    os.killpg(self.proc.pid, sig)  # the group: the server and its training/UMAP workers
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # workers left in the group after the leader ended
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if not self._log.closed:
            self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class AppProcess(ProcessGroup):
    """`python app.py` in its own process group, answering on a free port once constructed; `stop()` (or
    leaving the `with` block) ends it and its training and UMAP workers."""

    def __init__(self, checkpoints: str | Path | None = None, data_root: str | None = None, port: int | None = None,
                 umap_warmup: bool = False, log_path: Path | None = None, startup_timeout: float = 120.0,
                 extra_args: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path or tempfile.mkstemp(prefix="vae-explorer-app-", suffix=".log")[1])
        cmd = [sys.executable, "app.py", "--port", str(self.port), *extra_args]
        if checkpoints:
            cmd += ["--checkpoints", str(checkpoints)]
        if data_root:
            cmd += ["--data-root", data_root]
        if not umap_warmup:
            cmd.append("--no-umap-warmup")
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost",
               "no_proxy": "127.0.0.1,localhost"}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - self.started  # process start -> the page answers 200

class ProxyProcess(ProcessGroup):
    """The demo proxy (`proxy.py`) over `upstreams` in its own process group, answering once constructed."""

    def __init__(self, upstreams: list[str], port: int | None = None, host: str = "127.0.0.1",
                 startup_timeout: float = 60.0):
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="vae-explorer-proxy-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vae_explorer.server.proxy", "--host", host, "--port", str(self.port), *upstreams],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
        try:
            self._wait_ready(startup_timeout)  # "/" answers 200: through a replica
        except BaseException:
            self.stop()
            raise


class Replicas:
    """`n` app processes over one checkpoints folder and the demo proxy in front: `.url` is the proxy's,
    `.apps[i].url` replica i's. Started together (each takes ~7 s of mostly CPU); `stop()` ends all of them,
    also when one fails to start."""

    def __init__(self, n: int, checkpoints: str | Path, proxy_port: int | None = None, proxy_host: str = "127.0.0.1",
                 extra_args: tuple[str, ...] = (), startup_timeout: float = 120.0):
        import concurrent.futures

        self.apps: list[AppProcess] = []
        self.proxy: ProxyProcess | None = None
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(AppProcess, checkpoints, extra_args=extra_args, startup_timeout=startup_timeout)
                       for _ in range(n)]
            errors = []
            for f in futures:
                try:
                    self.apps.append(f.result())
                except BaseException as e:  # noqa: BLE001 - stop the others, then say why
                    errors.append(e)
        try:
            if errors:
                raise errors[0]
            self.proxy = ProxyProcess([a.url for a in self.apps], proxy_port, proxy_host)
        except BaseException:
            self.stop()
            raise
        self.url = self.proxy.url

    def stop(self) -> None:
        """All at once: each stop may wait seconds for its process to close its workers."""
        import concurrent.futures

        processes = ([self.proxy] if self.proxy else []) + self.apps
        with concurrent.futures.ThreadPoolExecutor(max(1, len(processes))) as pool:
            list(pool.map(lambda p: p.stop(), processes))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
