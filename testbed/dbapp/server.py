"""The test app's HTTP server: GET /health answers 200 only when the database's schema is the
one this code expects (alembic_version = the head of the revisions the image carries), else
503 with what it found; GET /version answers the version the image was built as.

It reads alembic_version itself (no `alembic current` process per probe): one short
connection per request, so a recreated database or a downgrade shows at the next probe.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from dburl import database_url
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("dbapp")
HERE = Path(__file__).resolve().parent
PORT = int(os.environ.get("APP_PORT", "8080"))
VERSION = os.environ.get("APP_VERSION", "?")
EXPECTED = ScriptDirectory.from_config(Config(str(HERE / "alembic.ini"))).get_current_head()
ENGINE = create_engine(database_url(), poolclass=pool.NullPool)


def schema_revisions() -> tuple[str, ...]:
    """The revisions alembic_version holds now (empty before the first migration)."""
    with ENGINE.connect() as connection:
        return tuple(MigrationContext.configure(connection).get_current_heads())


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/version":
            self.answer(HTTPStatus.OK, VERSION)
        elif self.path == "/health":
            try:
                found = schema_revisions()
            except SQLAlchemyError as exc:
                self.answer(HTTPStatus.SERVICE_UNAVAILABLE, f"database: {type(exc).__name__}")
                return
            if found == (EXPECTED,):
                self.answer(HTTPStatus.OK, f"ok {EXPECTED}")
            else:
                current = ",".join(found) or "none"
                self.answer(
                    HTTPStatus.SERVICE_UNAVAILABLE, f"schema {current}, code expects {EXPECTED}"
                )
        else:
            self.answer(HTTPStatus.NOT_FOUND, "not found")

    def answer(self, status: HTTPStatus, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        if "/health" not in str(args[:1]):  # the healthcheck polls every second
            log.info("%s " + format, self.address_string(), *args)


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    # PID 1 gets no default SIGTERM action: without this, `docker stop` waits for its kill.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    log.info("app %s listening on :%d, expects schema %s", VERSION, PORT, EXPECTED)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()  # noqa: S104 - container


if __name__ == "__main__":
    main()
