"""How both sides connect to the queue's Redis (ARQ's RedisSettings from ClientSettings)."""

from __future__ import annotations

from arq.connections import RedisSettings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .settings import ClientSettings

REDIS_RETRIES = 12


def redis_settings(settings: ClientSettings) -> RedisSettings:
    return RedisSettings(
        host=settings.redis_host,
        port=settings.redis_port,
        database=settings.redis_db,
        username=settings.redis_username or None,
        password=settings.redis_password.reveal() or None,
        ssl=settings.redis_ssl,
        ssl_ca_certs=str(settings.redis_ssl_ca_file) if settings.redis_ssl_ca_file else None,
        ssl_certfile=str(settings.redis_ssl_cert_file) if settings.redis_ssl_cert_file else None,
        ssl_keyfile=str(settings.redis_ssl_key_file) if settings.redis_ssl_key_file else None,
        ssl_check_hostname=settings.redis_ssl,
        # Ride out a Redis restart (up to ~30 s) instead of crashing the poll loop.
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        # OSError too: a refused connect surfaces as one, and redis-py retries only what it lists.
        retry=Retry(
            ExponentialBackoff(cap=3.0, base=0.2),
            REDIS_RETRIES,
            supported_errors=(RedisConnectionError, RedisTimeoutError, OSError),  # type: ignore[arg-type]
        ),
    )
