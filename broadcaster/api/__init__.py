"""The admin API under /api/v1/: JSON in and out, bearer tokens, zone scopes.

- ``models``: one pydantic model per request and response body;
- one module per resource with its handlers and routes: ``zones``,
  ``channels``, ``loudspeakers``, ``media``, ``programmes``, ``alerts``,
  ``logs`` (broadcasts, audit), ``reports``;
- ``router``: the route table and ``AdminApi``, the twisted Resource;
- ``openapi``: the document, generated from the models and the route table
  (``python -m broadcaster.api.openapi`` rewrites broadcaster/api/openapi.json;
  a test keeps the committed file equal to the generated one).

Handlers do no SQL: they await repository methods (Deferreds run in the
database's pool), so no request waits on the database lock on the reactor.
"""

from __future__ import annotations

from broadcaster.api.call import ApiError, Call, Route, time_query
from broadcaster.api.router import ROUTES, AdminApi

__all__ = ["ROUTES", "AdminApi", "ApiError", "Call", "Route", "time_query"]
