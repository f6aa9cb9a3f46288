"""Migrations: idempotent, safe when run at once from several processes, and migrating step by
step gives the same schema as a fresh install."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest

from jobs_server.errors import ConfigError
from jobs_server.store import migrations
from jobs_server.store.migrations import available_migrations, migrate

SCHEMA = """
SELECT 'column', table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
       || ' ' || coalesce(column_default, '')
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'function', p.proname || ' ' || md5(pg_get_functiondef(p.oid))
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
UNION ALL
SELECT 'trigger', tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'constraint', conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
ORDER BY 1, 2
"""


async def schema_of(url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(url)
    try:
        return [(r[0], r[1]) for r in await conn.fetch(SCHEMA)]
    finally:
        await conn.close()


async def test_migrate_twice_applies_once(empty_database_url, database_url):
    first = await migrate(empty_database_url)
    assert [m.version for m in first] == [m.version for m in available_migrations()]
    assert await migrate(empty_database_url) == []
    assert await schema_of(empty_database_url) == await schema_of(database_url)


async def test_migrate_at_once_from_two_processes(empty_database_url, database_url):
    env = os.environ | {"JOBS_DATABASE_URL": empty_database_url}
    cmd = [sys.executable, "-m", "jobs_server", "migrate"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = sorted(out.decode().strip() for out, _ in outs)
    assert said[0].startswith("applied: 0001_jobs")
    assert said[1] == "applied: nothing (up to date)"
    # and from two tasks of one process, for good measure
    results = await asyncio.gather(migrate(empty_database_url), migrate(empty_database_url))
    assert results == [[], []]
    conn = await asyncpg.connect(empty_database_url)
    assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(
        available_migrations()
    )
    await conn.close()
    assert await schema_of(empty_database_url) == await schema_of(database_url)


async def test_step_by_step_equals_fresh_install(empty_database_url, database_url):
    for m in available_migrations():
        applied = await migrate(empty_database_url, target=m.version)
        assert [a.version for a in applied] == [m.version]
    assert await schema_of(empty_database_url) == await schema_of(database_url)


async def test_an_edited_migration_is_refused(empty_database_url, monkeypatch):
    await migrate(empty_database_url)
    real = available_migrations()
    edited = [migrations.Migration(m.version, m.name, m.sql + "\n-- edited") for m in real]
    monkeypatch.setattr(migrations, "available_migrations", lambda: edited)
    with pytest.raises(ConfigError, match="was changed after it was applied"):
        await migrate(empty_database_url)


async def test_migrate_without_a_database_says_what_is_wrong(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")}
    r = subprocess.run(
        [sys.executable, "-m", "jobs_server", "migrate"], env=env, capture_output=True, timeout=30
    )
    assert r.returncode == 2
    assert b"JOBS_DATABASE_URL is not set" in r.stderr
    env["JOBS_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    r = subprocess.run(
        [sys.executable, "-m", "jobs_server", "migrate"], env=env, capture_output=True, timeout=30
    )
    assert r.returncode == 2
    assert b"cannot connect to PostgreSQL" in r.stderr
