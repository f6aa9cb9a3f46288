-- The outbox of jobs_sdk.outbox, in the producer's own database. `{table}` is the table's
-- name (checked to be an identifier). A row is an EnqueueRequest waiting for the relay:
-- `batch_key` is set once a relay has claimed it into a batch, and is that batch's
-- Idempotency-Key, so a batch resent after a crash or an outage is the same request;
-- `error` keeps a request the server refused for good (it is never sent again).

-- name: create_table
CREATE TABLE IF NOT EXISTS {table} (
    id         bigserial PRIMARY KEY,
    request    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    batch_key  text,
    claimed_at timestamptz,
    error      text
);
CREATE INDEX IF NOT EXISTS {name}_unclaimed_idx ON {table} (id)
    WHERE batch_key IS NULL AND error IS NULL;
CREATE INDEX IF NOT EXISTS {name}_batch_idx ON {table} (batch_key)
    WHERE batch_key IS NOT NULL;

-- name: add_asyncpg
INSERT INTO {table} (request) SELECT r::jsonb FROM unnest($1::text[]) AS r;

-- name: add_sqlalchemy
INSERT INTO {table} (request) VALUES (CAST(:request AS jsonb));

-- name: orphaned_batches
-- Batches a relay claimed but did not finish (it died, or the server was unreachable).
SELECT batch_key FROM {table}
WHERE batch_key IS NOT NULL AND error IS NULL AND claimed_at <= now() - $1 * interval '1 second'
GROUP BY batch_key ORDER BY min(id) LIMIT $2;

-- name: claim_batch
WITH picked AS (
    SELECT id FROM {table} WHERE batch_key IS NULL AND error IS NULL
    ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
)
UPDATE {table} o SET batch_key = $1, claimed_at = now() FROM picked WHERE o.id = picked.id;

-- name: lock_batch
-- One relay at a time per batch, for the rest of its transaction.
SELECT pg_try_advisory_xact_lock(hashtext('{table}'), hashtext($1));

-- name: batch_rows
SELECT id, request::text AS request FROM {table}
WHERE batch_key = $1 AND error IS NULL ORDER BY id;

-- name: delete_rows
DELETE FROM {table} WHERE id = ANY ($1::bigint[]);

-- name: release_rows
-- Back to unclaimed: sent again later, in a new batch under a new key.
UPDATE {table} SET batch_key = NULL, claimed_at = NULL WHERE id = ANY ($1::bigint[]);

-- name: fail_row
UPDATE {table} SET error = $2, batch_key = NULL, claimed_at = NULL WHERE id = $1;

-- name: count_waiting
SELECT count(*) FROM {table} WHERE error IS NULL;
