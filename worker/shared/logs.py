"""Logging set-up of the command line, both sides: stderr, plus LOG_FILE for the worker."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# LOG_FILE is rotated at this size, keeping this many old files (LOG_FILE.1, ...).
LOG_FILE_MAX_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5


def setup_logging(log_file: Path | None, verbose: bool = False) -> None:
    """Log to stderr (journald keeps it under systemd) and, when configured, to LOG_FILE."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        try:
            # Rotated by size: a flood of refused jobs must not fill the disk.
            handlers.append(
                logging.handlers.RotatingFileHandler(
                    log_file, maxBytes=LOG_FILE_MAX_BYTES, backupCount=LOG_FILE_BACKUPS
                )
            )
        except OSError as exc:
            print(f"update-executor: cannot write LOG_FILE {log_file}: {exc}", file=sys.stderr)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, handlers=handlers
    )
    # Apprise's debug lines print the notification URLs with their tokens: never, whatever
    # our level (`-v` sets DEBUG).
    logging.getLogger("apprise").setLevel(logging.INFO)
    logging.getLogger("urllib3").setLevel(logging.INFO)  # its debug lines name the URL's path
    # arq logs every job's arguments and result at INFO; the summary is logged by us.
    logging.getLogger("arq.worker").setLevel(logging.WARNING if not verbose else logging.INFO)
