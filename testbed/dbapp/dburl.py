"""The database URL of the test app, from the environment as a compose file sets it.

DATABASE_URL wins when set; else POSTGRES_SERVER (a host name, or a socket directory when it
starts with /), POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB. The password
goes into the URL object, never into a string that gets logged (str() of a URL hides it).
"""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url


def database_url() -> URL:
    """The URL the migrations and the health endpoint connect to."""
    if os.environ.get("DATABASE_URL"):
        return make_url(os.environ["DATABASE_URL"])
    return URL.create(
        "postgresql+psycopg2",
        username=os.environ.get("POSTGRES_USER", "app"),
        password=os.environ.get("POSTGRES_PASSWORD") or None,
        database=os.environ.get("POSTGRES_DB", "app"),
        # libpq's host parameter takes a host name or a socket directory alike.
        query={
            "host": os.environ.get("POSTGRES_SERVER", "db"),
            "port": os.environ.get("POSTGRES_PORT", "5432"),
            "connect_timeout": "3",
        },
    )
