"""Numbered SQL migrations (store/migrations/NNNN_name.sql), applied in order, recorded in
`schema_migrations`, serialized by a transaction-level advisory lock (safe behind PgBouncer and
when several processes migrate at once).

Every pending migration runs in one transaction. A value added to an enum (`ALTER TYPE ... ADD
VALUE`, as 0010 adds 'expired' to job_status) cannot be used before that transaction commits
("unsafe use of new value"): no migration may write the value it, or another migration of the
same run, added (0010's partial indexes say NOT IN ('pending', 'running') instead). Statements
that run after migrating (queries.sql) may use it."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

import asyncpg

from jobs_server.errors import ConfigError, StoreUnavailable

__all__ = ["Migration", "applied_versions", "available_migrations", "migrate"]

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x6A6F6273  # "jobs"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    folder = resources.files("jobs_server.store").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(number), name, entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def applied_versions(conn: asyncpg.Connection) -> dict[int, str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {r["version"]: r["checksum"] for r in rows}


async def migrate(dsn: str, *, target: int | None = None) -> list[Migration]:
    """Apply what is missing, up to `target`; return what was applied. Idempotent."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.exceptions.PostgresError) as exc:
        raise StoreUnavailable(f"cannot connect to PostgreSQL to migrate: {exc}") from exc
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await conn.execute(_CREATE_TABLE)
            done = await applied_versions(conn)
            applied = []
            for m in available_migrations():
                if target is not None and m.version > target:
                    break
                if m.version in done:
                    if done[m.version] != m.checksum:
                        raise ConfigError(
                            f"migration {m.version:04d}_{m.name} was changed after it was "
                            "applied; never edit an applied migration, add a new one"
                        )
                    continue
                logger.info("applying migration", extra={"version": m.version, "migration": m.name})
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
                applied.append(m)
            return applied
    finally:
        await conn.close()
