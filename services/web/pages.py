"""The three pages people use, served as plain files: no build step, no templates.

    /call      the customer: the call and nothing else
    /desk      the agent: the call, a badge per coach, the cue panel
    /console   a supervisor: the lobby of their queues' live rooms (a ``*`` token), or
               a room: monitor, whisper, push-to-talk, cues
    /static/…  their modules, style sheet and icon (favicon.svg, linked from each page)

A page carries no secret and no room: the link that opens it holds both in its fragment
(``/desk#room=r1&token=…``), which browsers never send to a server, and the page removes it
from the address bar at once. The headers keep the page to its own origin: scripts, styles
and connections from here only, no framing, no referrer.
"""

from __future__ import annotations

import os
from os import PathLike
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"
PAGES = ("call", "desk", "console")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Permissions-Policy": "microphone=(self)",
    "Cache-Control": "no-cache",
}


class _Static(StaticFiles):
    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response


def _page(name: str) -> Route:
    path = STATIC / f"{name}.html"

    async def serve(request: Request) -> FileResponse:
        return FileResponse(path, headers=SECURITY_HEADERS, media_type="text/html")

    return Route(f"/{name}", serve, name=name)


def routes() -> list[BaseRoute]:
    return [*(_page(name) for name in PAGES), Mount("/static", _Static(directory=STATIC))]
