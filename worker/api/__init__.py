"""The API side: the drop-in FastAPI router (worker.api.router, its routes in worker.api.routes)
and the CLI (worker.api.cli).

`from worker.api import build_router` keeps working; the router is imported on first use so
that the CLI does not need FastAPI.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .router import SharedClient, build_router

__all__ = ["SharedClient", "build_router"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import router  # noqa: PLC0415 (lazy: the CLI runs without FastAPI)

        return getattr(router, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
