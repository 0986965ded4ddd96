"""A small sticky reverse proxy in front of several app replicas, for demos and tests on one machine.

`python -m vae_explorer.server.proxy --port 8000 http://127.0.0.1:7861 http://127.0.0.1:7862`

Production should use nginx (or any proxy with sticky sessions) as the README's "Serving a class" shows;
this one exists so the test suite and `scripts/serve_replicas.py` can show the same setup without one.

Why sticky: a Gradio session lives in one process. A queued call is a POST to /gradio_api/queue/join and an
SSE stream from /gradio_api/queue/data with the same session hash, uploads land in one replica's cache, and
gr.State stays in its memory, so every request of a visitor must reach the same replica. The replica is chosen
once and remembered in a cookie (COOKIE = its index): a page load without the cookie takes the next replica
in turn; any other request without it (an API client that keeps no cookies) is placed by its address, as
nginx's ip_hash does, so its calls still stay together. Bodies stream both ways unbuffered: uploads, and the
SSE stream whose events must reach the page as they happen.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

COOKIE = "vae_explorer_replica"
# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection, not the message; host and length are recomputed.
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
       "transfer-encoding", "upgrade", "host", "content-length"}


def sticky_app(upstreams: list[str]) -> Starlette:
    """The proxy as an ASGI app forwarding every method and path to one of `upstreams` (base URLs)."""
    upstreams = [u.rstrip("/") for u in upstreams]
    turn = itertools.cycle(range(len(upstreams)))
    # No read timeout: an SSE stream is idle between events (Gradio sends a heartbeat every 15 s anyway).
    client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None, write=None, pool=None),
                               follow_redirects=False)

    def choose(request: Request) -> tuple[int, bool]:
        """(replica index, whether the visitor still needs the cookie)."""
        value = request.cookies.get(COOKIE, "")
        if value.isdigit() and int(value) < len(upstreams):
            return int(value), False
        if request.method == "GET" and request.url.path in ("", "/"):
            return next(turn), True
        address = request.client.host if request.client else ""
        return int.from_bytes(hashlib.sha256(address.encode()).digest()[:4], "big") % len(upstreams), True

    async def forward(request: Request):
        index, set_cookie = choose(request)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
        if "content-length" in request.headers:  # an upload streams through with its declared length
            headers.append(("content-length", request.headers["content-length"]))
        # Gradio builds the URLs of its files from these, so they point at the proxy, not the replica.
        headers += [("x-forwarded-host", request.headers.get("host", "")),
                    ("x-forwarded-proto", request.url.scheme),
                    ("x-forwarded-for", request.client.host if request.client else "")]
        body = request.stream() if request.method not in ("GET", "HEAD") else None
        path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path  # as sent, still escaped
        upstream = client.build_request(request.method, upstreams[index] + path,
                                        params=request.url.query, headers=headers, content=body)
        try:
            response = await client.send(upstream, stream=True)
        except httpx.HTTPError as e:
            return PlainTextResponse(f"replica {index} ({upstreams[index]}) did not answer: {e}", status_code=502)

        async def relay():
            try:  # raw: passed on as it arrives, compressed or not, one SSE event at a time
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:  # also when the visitor goes away mid-stream: close the replica's side too
                await response.aclose()

        out = StreamingResponse(relay(), status_code=response.status_code,
                                headers={k: v for k, v in response.headers.items() if k.lower() not in HOP - {"content-length"}})
        # Starlette joins repeated headers (two Set-Cookie) with commas above: put each back on its own line.
        out.raw_headers = [(k, v) for k, v in out.raw_headers if k != b"set-cookie"] + \
            [(b"set-cookie", v.encode("latin-1")) for v in response.headers.get_list("set-cookie")]
        if set_cookie:
            out.set_cookie(COOKIE, str(index), httponly=True, samesite="lax")
        return out

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await client.aclose()

    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="A sticky reverse proxy over app replicas (demos and tests; use nginx "
                                            "in production, see the README's 'Serving a class').")
    p.add_argument("upstreams", nargs="+", help="base URLs of the replicas, e.g. http://127.0.0.1:7861")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    import uvicorn

    print(f"proxy on http://{args.host}:{args.port} -> {', '.join(args.upstreams)}", flush=True)
    uvicorn.run(sticky_app(args.upstreams), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
