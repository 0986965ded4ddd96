"""The demo proxy (vae_explorer/server/proxy.py) over two tiny upstream servers: sticky by cookie and by
address, bodies streamed both ways unbuffered (an SSE event arrives before the next one exists), and a
replica that does not answer is a 502 naming it."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from vae_explorer.server.launcher import free_port
from vae_explorer.server.proxy import COOKIE, sticky_app

pytestmark = pytest.mark.server  # starts servers (in this process)


def upstream(name: str, release: threading.Event) -> Starlette:
    async def who(request: Request):
        return PlainTextResponse(name, headers={"set-cookie": f"{name}=1; Path=/"})

    async def upload(request: Request):
        body = b"".join([chunk async for chunk in request.stream()])
        return PlainTextResponse(f"{name} {len(body)} {request.headers.get('x-forwarded-host')}")

    async def events(request: Request):
        async def stream():
            yield b"data: first\n\n"
            while not release.is_set():  # the second event exists only after the client has the first
                await asyncio.sleep(0.01)
            yield b"data: second\n\n"
        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/", who), Route("/api/who", who), Route("/upload", upload, methods=["POST"]),
                             Route("/events", events)])


@contextlib.contextmanager
def running(app):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_sticky_streaming_proxy():
    release = threading.Event()
    with running(upstream("a", release)) as a, running(upstream("b", release)) as b, \
            running(sticky_app([a, b, f"http://127.0.0.1:{free_port()}"])) as proxy:
        # Page loads without the cookie take replicas in turn; each answer sets the cookie naming its replica,
        # and the replica's own cookies come through beside it.
        first = [httpx.get(proxy + "/") for _ in range(3)]
        assert [r.text for r in first[:2]] == ["a", "b"] and first[2].status_code == 502
        assert "127.0.0.1:" in first[2].text and "did not answer" in first[2].text
        assert [r.cookies.get(COOKIE) for r in first[:2]] == ["0", "1"]
        assert first[0].cookies.get("a") == "1"
        # With the cookie, every request stays on its replica.
        with httpx.Client(base_url=proxy, cookies={COOKIE: "1"}) as client:
            assert {client.get("/api/who").text for _ in range(5)} == {"b"}
            big = b"x" * (3 * 2**20 + 7)
            assert client.post("/upload", content=big).text == f"b {len(big)} {proxy.removeprefix('http://')}"
        # Without it, other requests are placed by the client's address: the same replica every time.
        assert len({httpx.get(proxy + "/api/who").text for _ in range(5)}) == 1

        # SSE: the first event must arrive while the upstream still holds the second back.
        with httpx.stream("GET", proxy + "/events", cookies={COOKIE: "0"}, timeout=10) as response:
            chunks = response.iter_raw()
            assert next(chunks) == b"data: first\n\n"
            release.set()
            assert b"".join(chunks) == b"data: second\n\n"
