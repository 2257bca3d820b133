"""Page numbers for the pages' tables (the API has its own headers-based pagination)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Query
from starlette.requests import Request

from dproxy_auth.routes.api.pagination import MAX_PAGE
from dproxy_shared.repositories._paging import Window

PER_PAGE = 20
PageQuery = Annotated[int, Query(ge=1, le=MAX_PAGE)]


@dataclass(frozen=True, slots=True)
class Pager:
    request: Request
    page: int
    total: int = 0
    per_page: int = PER_PAGE

    @property
    def window(self) -> Window:
        return Window(offset=(self.page - 1) * self.per_page, limit=self.per_page)

    def of(self, total: int) -> Pager:
        return Pager(self.request, self.page, total, self.per_page)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def first_item(self) -> int:
        return min(self.total, self.window.offset + 1)

    @property
    def last_item(self) -> int:
        return min(self.total, self.window.offset + self.per_page)

    @property
    def previous(self) -> int | None:
        return self.page - 1 if self.page > 1 else None

    @property
    def next(self) -> int | None:
        return self.page + 1 if self.page < self.pages else None

    def url(self, page: int) -> str:
        """This page's URL at another page number, keeping the other parameters (sort)."""
        url = self.request.url.include_query_params(page=page)
        return f"{url.path}?{url.query}"
