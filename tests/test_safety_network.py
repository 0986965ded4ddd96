"""The app stays on this machine: it listens on 127.0.0.1 unless told otherwise, never makes
a share link unless asked, sends no analytics, and serves with every outside connection
refused (behind a dead proxy, and with non-loopback sockets blocked in-process).
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from vae_explorer.server.launcher import free_port

from .conftest import REPO, copy_checkpoints

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def _is_loopback(host) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def local_ipv4_addresses() -> list[str]:
    """This machine's IPv4 addresses, one per interface that has one (SIOCGIFADDR)."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue  # no IPv4 address on this interface
            out.append(socket.inet_ntoa(packed[20:24]))
    return out


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the sockets listening on `port`, from /proc/net/tcp and tcp6."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(address)
            if width == 8:
                found.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:  # four little-endian 32-bit words
                found.append(socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
    return found


def _sse_result(http, base: str, api_name: str, data: list) -> str:
    """Raw HTTP call of a queued endpoint: POST starts it, GET streams until it completes."""
    r = http.post(f"{base}/gradio_api/call/{api_name}", json={"data": data})
    r.raise_for_status()
    stream = http.get(f"{base}/gradio_api/call/{api_name}/{r.json()['event_id']}").text
    assert "event: complete" in stream, stream[-500:]
    return stream


# ---- defaults ----------------------------------------------------------------------------------

@pytest.mark.server
def test_defaults_are_loopback_and_no_share():
    import app

    args = app.parse_args([])
    assert args.host == "127.0.0.1" and args.share is False
    assert app.parse_args(["--share"]).share is True  # only when asked
    assert app.parse_args(["--loaded-models", "5"]).loaded_models == 5
    with pytest.raises(SystemExit):
        app.parse_args(["--loaded-models", "0"])
    assert app.parse_args([]).view_slots == app.DEFAULT_VIEW_SLOTS
    assert app.parse_args(["--view-slots", "3"]).view_slots == 3
    with pytest.raises(SystemExit):
        app.parse_args(["--view-slots", "0"])


def test_launch_passes_loopback_and_share_false_even_with_gradio_share_set(monkeypatch):
    import gradio as gr

    import app

    calls = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: calls.append(kw) or (None, "", None))
    monkeypatch.setenv("GRADIO_SHARE", "True")  # would turn sharing on in gradio if share were left unset
    with gr.Blocks() as demo:
        gr.Markdown("x")
    app.launch(demo)
    (kw,) = calls
    assert kw["server_name"] == "127.0.0.1" and kw["share"] is False
    assert kw["max_file_size"] == 10 * 1024 * 1024


def test_main_launches_on_loopback_without_share(monkeypatch, tmp_path):
    import app

    seen = {}

    class Stop(Exception):
        pass

    def fake_launch(demo, host, port, share, **kw):
        seen.update(host=host, port=port, share=share)
        raise Stop

    monkeypatch.setattr(app, "launch", fake_launch)
    with pytest.raises(Stop):
        app.main(["--checkpoints", str(copy_checkpoints(tmp_path / "ck")), "--no-umap-warmup"])
    assert seen == {"host": "127.0.0.1", "port": 7860, "share": False}


@pytest.mark.subprocess
def test_analytics_are_off_before_gradio_is_imported():
    # A fresh interpreter without the variable: app.py must set it before gradio's first import.
    probe = (
        "import importlib.abc, json, os, sys\n"
        "seen = {}\n"
        "class Watch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'gradio' and 'at_import' not in seen:\n"
        "            seen['at_import'] = os.environ.get('GRADIO_ANALYTICS_ENABLED')\n"
        "        return None\n"
        "sys.meta_path.insert(0, Watch())\n"
        "import app\n"
        "import gradio.analytics\n"
        "print(json.dumps({**seen, 'enabled': gradio.analytics.analytics_enabled()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"at_import": "False", "enabled": False}


def test_blocks_have_analytics_disabled(explorer):
    import app

    assert app.build_app(explorer).analytics_enabled is False


def test_the_queue_keeps_no_record_of_every_call(explorer):
    # Gradio's queue would keep 10,000 calls' records for a monitoring page and summarise all of them with
    # pandas after every call: memory and time that grow with the traffic of a long-running server.
    import app

    queue = app.build_app(explorer)._queue
    assert queue.ANALYTICS_MAX_EVENTS == 1 and queue.ANAYLTICS_CACHE_FREQUENCY >= 2**62


# ---- the running server --------------------------------------------------------------------------

def test_the_server_listens_on_loopback_only(app_server):
    url, _ = app_server
    port = int(url.rsplit(":", 1)[1])
    listening = listening_addresses(port)
    assert listening and all(ipaddress.ip_address(a).is_loopback for a in listening), listening
    outside = [a for a in local_ipv4_addresses() if not ipaddress.ip_address(a).is_loopback]
    if not outside:
        pytest.skip("no non-loopback interface on this machine to try")
    for address in outside:
        with socket.socket() as s:
            s.settimeout(3)
            with pytest.raises(OSError):  # refused (or unreachable): nothing answers there
                s.connect((address, port))
    with socket.create_connection(("127.0.0.1", port), timeout=3):
        pass  # while loopback does


class RecordingProxy:
    """A 'proxy' that accepts nothing useful: each connection is recorded and closed at once."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    self.connections.append(conn.recv(200))
                except OSError:
                    self.connections.append(b"")

    def close(self):
        self.sock.close()


@pytest.mark.subprocess
def test_app_serves_with_every_outside_connection_refused(tmp_path):
    """`python app.py` behind a proxy that refuses everything, with no NO_PROXY of ours: the app
    still starts (it exempts localhost itself), serves the page and answers API calls, and never
    tries the proxy."""
    import httpx

    proxy = RecordingProxy()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.upper() not in (*PROXY_VARS, "NO_PROXY", "GRADIO_ANALYTICS_ENABLED")}
    env.update({v: f"http://127.0.0.1:{proxy.port}" for v in PROXY_VARS})
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--no-umap-warmup",
                             "--checkpoints", str(copy_checkpoints(tmp_path / "ck"))],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    output = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 120
        while not any("vae-explorer is serving" in line for line in output):
            assert proc.poll() is None, "".join(output)[-3000:]
            assert time.time() < deadline, "".join(output)[-3000:]
            time.sleep(0.2)
        with httpx.Client(trust_env=False, timeout=60) as http:  # the test's own calls go direct
            page = http.get(base + "/")
            assert page.status_code == 200 and '"title":"vae-explorer"' in page.text.replace(" ", "")
            external = [u for u in re.findall(r'(?:src|href)="(https?://[^"]+)"', page.text)
                        if not _is_loopback(httpx.URL(u).host)]
            assert not external, external  # no CDN scripts, fonts or styles
            assert "digits_vae" in _sse_result(http, base, "checkpoints", [])
            assert "digits_vae" in _sse_result(http, base, "model_card", ["digits_vae"])
        from gradio_client import Client

        client = Client(base, analytics_enabled=False, verbose=False, httpx_kwargs={"trust_env": False})
        assert client.predict("digits_ae", "digits_vae", 7, api_name="/select_point")[0] == 7
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        proxy.close()
    log = "".join(output)
    assert "localhost is not accessible" not in log
    assert proxy.connections == [], proxy.connections  # nothing went out through the proxy


@pytest.mark.server
def test_no_outside_connection_is_attempted_in_process(monkeypatch, explorer):
    """Build, launch and use the app with every non-loopback connection and name lookup refused
    and recorded; none may be attempted."""
    import httpx

    import app

    attempts = []
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guarded(original):
        def wrapper(self, address, *args):
            host = address[0] if isinstance(address, tuple) else None  # AF_UNIX paths are local
            if not _is_loopback(host):
                attempts.append(("connect", address))
                raise ConnectionRefusedError(f"test: no outside connections ({address})")
            return original(self, address, *args)
        return wrapper

    def guarded_getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host) and host != "0.0.0.0":
            attempts.append(("getaddrinfo", host))
            raise socket.gaierror(f"test: no outside lookups ({host})")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(connect_ex))
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)

    # The guard works: an outside address is refused and recorded.
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("192.0.2.1", 80))
    assert attempts.pop() == ("connect", ("192.0.2.1", 80))

    demo = app.build_app(explorer)
    port = free_port()
    try:
        _, local_url, share_url = app.launch(demo, port=port, prevent_thread_lock=True, quiet=True)
        assert share_url is None and "127.0.0.1" in local_url
        # Raw HTTP, not gradio_client: constructing a Client makes huggingface_hub look up huggingface.co
        # (its user-agent registry), which is the test client's doing, not the app's.
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(trust_env=False, timeout=60) as http:
            assert http.get(base + "/").status_code == 200
            assert "digits_vae" in _sse_result(http, base, "checkpoints", [])
            assert '"Test image **3**' in _sse_result(http, base, "select_point", ["digits_ae", "digits_vae", 3])
            assert "event: complete" in _sse_result(http, base, "sample", ["digits_vae", 1.0, 0])
            assert "digits_vae" in _sse_result(http, base, "model_card", ["digits_vae"])
            assert "digits_vae" in _sse_result(http, base, "latent_map", ["digits_ae", "digits_vae", "auto", 0, "label"])
    finally:
        demo.close()
    assert attempts == [], attempts
