"""Who may use the process: with a key set, every route it serves needs it (the API, the page, its
uploads and events, the docs). API clients send it as a bearer header; a browser gets a form that sets
a cookie."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.api_request import ApiConfig, ApiError, error_response, read_body

KEY_COOKIE = "pocket_omni_key"
LOGIN_PAGE = """<!doctype html><meta charset="utf-8"><title>pocket-omni: key</title>
<body style="font-family:sans-serif;max-width:28em;margin:4em auto">
<h1>pocket-omni</h1><p>This server asks for its key.</p>{note}
<form method="post" action="/login"><input type="password" name="key" autofocus placeholder="key" size="30">
<button type="submit">Open</button></form></body>"""


def has_key(request: Request, key: str) -> bool:
    """The bearer header (API clients, gradio_client) or the cookie the login page sets (a browser)."""
    sent = request.headers.get("authorization", "").removeprefix("Bearer ")
    return any(secrets.compare_digest(s.encode(), key.encode()) for s in (sent, request.cookies.get(KEY_COOKIE, ""))
               if s)


def login(config: ApiConfig):
    """/login. GET: the key form; POST: a right key sets the cookie and opens the page."""
    async def login_page(request: Request):
        return await _login(request, config.api_key)

    return login_page


async def _login(request: Request, key: str | None):
    if request.method == "POST":
        sent = parse_qs((await read_body(request, 4096)).decode(errors="replace")).get("key", [""])[0]
        if key and secrets.compare_digest(sent.encode(), key.encode()):
            done = RedirectResponse("/", status_code=303)
            done.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict")
            return done
        return HTMLResponse(LOGIN_PAGE.format(note="<p><b>That key is not right.</b></p>"), status_code=401)
    return HTMLResponse(LOGIN_PAGE.format(note=""))


def guard(config: ApiConfig):
    """Before any route reads anything: the key, on every route the process serves (the API, the page,
    its uploads and events, the docs), and the body size of the API's routes."""
    async def guard(request: Request, call_next):
        if config.api_key and request.url.path != "/login" and not has_key(request, config.api_key):
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                return RedirectResponse("/login", status_code=303)  # a browser: the key form
            return error_response(ApiError(401, "invalid or missing API key", code="invalid_api_key",
                                           kind="authentication_error"))
        if request.url.path.startswith("/v1/"):
            size = request.headers.get("content-length")
            if size and size.isdigit() and int(size) > config.max_body_bytes:
                return error_response(ApiError(413, f"the request is {int(size)} bytes; the limit is "
                                                    f"{config.max_body_bytes}", code="payload_too_large"))
        return await call_next(request)

    return guard
