"""GitLab's offset pagination: `page` and `per_page` in, `X-*` and `Link` headers out.

    X-Total, X-Total-Pages, X-Per-Page, X-Page, X-Next-Page, X-Prev-Page (empty when none)
    Link: <…page=2…>; rel="next", <…>; rel="prev", <…page=1…>; rel="first", <…>; rel="last"

Like GitLab, `per_page` above 100 is lowered to 100 rather than refused, and an empty list
still has one page. Links start with the external URL (what clients reach, and what GitLab
clients compare their base URL with), not with the address this process was reached at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, TypeVar

from fastapi import Depends, Query, Request, Response

from dproxy_auth.deps import RuntimeDep
from dproxy_shared.repositories._paging import Window

T = TypeVar("T")

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
# Bounds the offset, which databases store in 64 bits; GitLab caps offsets far lower.
MAX_PAGE = 100_000


class Pagination:
    def __init__(
        self, request: Request, response: Response, external_url: str, page: int, per_page: int
    ) -> None:
        self._request = request
        self._response = response
        self._external_url = external_url.rstrip("/")
        self.page = page
        self.per_page = min(per_page, MAX_PER_PAGE)

    @property
    def window(self) -> Window:
        return Window(offset=(self.page - 1) * self.per_page, limit=self.per_page)

    def slice(self, items: Sequence[T]) -> list[T]:
        """The current page of a list computed in Python (sets the headers too)."""
        self.publish(len(items))
        window = self.window
        return list(items[window.offset : window.offset + window.limit])

    def publish(self, total: int) -> None:
        """Set the pagination headers for a list of `total` items."""
        pages = max(1, math.ceil(total / self.per_page))
        next_page = self.page + 1 if self.page < pages else None
        prev_page = self.page - 1 if self.page > 1 else None
        headers = self._response.headers
        headers["X-Total"] = str(total)
        headers["X-Total-Pages"] = str(pages)
        headers["X-Per-Page"] = str(self.per_page)
        headers["X-Page"] = str(self.page)
        headers["X-Next-Page"] = str(next_page or "")
        headers["X-Prev-Page"] = str(prev_page or "")
        links = [
            (next_page, "next"),
            (prev_page, "prev"),
            (1, "first"),
            (pages, "last"),
        ]
        headers["Link"] = ", ".join(
            f'<{self._link(number)}>; rel="{rel}"' for number, rel in links if number
        )

    def _link(self, page: int) -> str:
        url = self._request.url.include_query_params(page=page, per_page=self.per_page)
        return f"{self._external_url}{url.path}?{url.query}"


def get_pagination(
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page number")] = 1,
    per_page: Annotated[
        int, Query(ge=1, description=f"Items per page (at most {MAX_PER_PAGE})")
    ] = DEFAULT_PER_PAGE,
) -> Pagination:
    return Pagination(request, response, runtime.settings.external_url, page, per_page)


PaginationDep = Annotated[Pagination, Depends(get_pagination)]
