-- The statement-level triggers on `jobs` paired their transition tables (old_rows, new_rows) by
-- id. The planner has no statistics for a transition table and estimates one row each, so it
-- paired them with a nested loop: quadratic in the statement's rows (a claim of 500 compared
-- 250,000 pairs, 25-30 ms in each of the two triggers, more than the claim itself).
--
-- The quota usage needs no pairing: a row's contribution is +1 for being active after the
-- statement and -1 for being active before it, summed per tenant over both tables (a row that
-- stays active, or stays inactive, adds nothing).
CREATE OR REPLACE FUNCTION jobs_track_active() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    -- Ordered by tenant so that concurrent statements lock usage rows in one order.
    FOR r IN
        SELECT tenant, sum(d) AS delta FROM (
            SELECT tenant, -count(*) AS d FROM old_rows
            WHERE status IN ('pending', 'running') GROUP BY tenant
            UNION ALL
            SELECT tenant, count(*) FROM new_rows
            WHERE status IN ('pending', 'running') GROUP BY tenant
        ) c
        GROUP BY tenant
        ORDER BY tenant
    LOOP
        IF r.delta <> 0 THEN
            UPDATE tenant_usage SET active = active + r.delta WHERE tenant = r.tenant;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- The feasibility load needs each ended attempt's pair (its time in running, and whether it
-- was released): hash the pairing instead of looping (linear in the statement's rows).
ALTER FUNCTION jobs_feasibility_track() SET enable_nestloop = off;
