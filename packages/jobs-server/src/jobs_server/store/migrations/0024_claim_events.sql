-- The claim statements announce the jobs they claim themselves (queries.sql: announce_claimed),
-- and, as every caller of jobs_notify_ids, send nothing when the session says no process
-- streams events (JOBS_EVENTS_NOTIFY=false sets jobs.events to off on the server's pools).
CREATE OR REPLACE FUNCTION jobs_notify_ids(p_ids uuid[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    i integer := 1;
BEGIN
    IF current_setting('jobs.events', true) = 'off' THEN
        RETURN;
    END IF;
    WHILE i <= coalesce(cardinality(p_ids), 0) LOOP
        PERFORM pg_notify('jobs_events', array_to_string(ARRAY(
            SELECT replace(x::text, '-', '') FROM unnest(p_ids[i:i + 199]) AS x), ','));
        i := i + 200;
    END LOOP;
END
$$;
