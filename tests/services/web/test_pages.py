"""The pages and their assets, as served: plain files under a strict policy, no secrets."""

from __future__ import annotations

import pytest

from services.web.pages import PAGES, STATIC
from tests.support import RunningService

pytestmark = pytest.mark.newest_redis


@pytest.mark.parametrize("page", PAGES)
async def test_a_page_is_served_under_a_policy_that_allows_only_its_own_origin(
    service: RunningService, page: str
) -> None:
    response = await service.http.get(f"/{page}")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"
    assert f'<script type="module" src="/static/{page}.js"></script>' in response.text


async def test_every_module_the_style_sheet_and_the_icon_are_served_with_their_types(
    service: RunningService,
) -> None:
    for path in sorted(STATIC.iterdir()):
        response = await service.http.get(f"/static/{path.name}")
        expected = {
            ".js": "text/javascript",
            ".css": "text/css",
            ".html": "text/html",
            ".svg": "image/svg+xml",
        }

        assert response.status_code == 200, path.name
        assert response.headers["content-type"].startswith(expected[path.suffix]), path.name
        assert "content-security-policy" in response.headers


async def test_no_page_has_inline_script_or_style_that_the_policy_would_block() -> None:
    for page in PAGES:
        html = (STATIC / f"{page}.html").read_text()

        assert "<script>" not in html
        assert " style=" not in html
        assert " on" + "click=" not in html
