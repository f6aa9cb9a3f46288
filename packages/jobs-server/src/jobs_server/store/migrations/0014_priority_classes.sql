-- Priority is a class: a use case's higher-priority due jobs are claimed before its lower ones,
-- earliest deadline first within a class (then oldest). The claim indexes lead with it.
DROP INDEX jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON jobs (use_case, priority DESC, deadline, id)
    WHERE status = 'pending';
DROP INDEX jobs_claim_tenant_idx;
CREATE INDEX jobs_claim_tenant_idx ON jobs (use_case, tenant, priority DESC, deadline, id)
    WHERE status = 'pending';

-- The keyed claim walks jobs_claim_idx, passing over blocked keys, instead of stepping through
-- every (concurrency key, rate key, tenant) group: its group index goes.
DROP INDEX jobs_claim_keyed_idx;

-- When a rate key's interval next has room, if its last claim filled it (null: it has room);
-- written by the keyed claim with the starts, read by it to pass over the key's jobs.
ALTER TABLE rate_buckets ADD COLUMN blocked_until timestamptz;
CREATE INDEX rate_buckets_blocked_idx ON rate_buckets (use_case, blocked_until)
    WHERE blocked_until IS NOT NULL;
