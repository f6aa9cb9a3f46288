-- Flow limits: a job may name a concurrency key (at most the use case's limit of its jobs run
-- at once) and a rate key (its jobs start at most the use case's N per interval). The claim
-- (claim_due_jobs_keyed) visits each (concurrency key, rate key, tenant) with pending jobs once,
-- so one key's or tenant's backlog is never walked to reach the others'. Keys are never empty
-- (at least one character), so the index uses '' for "no key", and a row comparison steps from
-- group to group.
ALTER TABLE jobs ADD COLUMN concurrency_key text, ADD COLUMN rate_key text;

CREATE INDEX jobs_claim_keyed_idx ON jobs (
    use_case, coalesce(concurrency_key, ''), coalesce(rate_key, ''), tenant,
    deadline, priority DESC, id
) WHERE status = 'pending';
-- A rate key's waiting jobs, for the dashboard; only keyed jobs pay for it.
CREATE INDEX jobs_rate_waiting_idx ON jobs (use_case, rate_key, run_at)
    WHERE status = 'pending' AND rate_key IS NOT NULL;

-- The starts of one rate key in the last interval, one entry per claim (a claim's starts share
-- its time), so at most `starts` entries; pruned by every claim that writes the row. Written in
-- the claim's statement under the row's lock and the leader fence: exact across failover.
CREATE TABLE rate_buckets (
    use_case  text NOT NULL,
    rate_key  text NOT NULL,
    starts_at timestamptz[] NOT NULL,
    starts    integer[] NOT NULL,
    PRIMARY KEY (use_case, rate_key)
);

-- jobs_enqueue stores the two keys from 0009 on, which redefines it with the uniqueness rules.
