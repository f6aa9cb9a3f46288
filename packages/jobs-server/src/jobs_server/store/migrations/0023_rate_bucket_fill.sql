-- A keyed claim rewrites the rate_buckets row of every rate key it starts, and the row grows
-- with the key's starts in its interval. With full pages each rewrite moved the row to another
-- page and wrote new entries in both of its indexes; room on the page keeps the rewrite a
-- heap-only update (blocked_until, the one indexed column that changes, stays null while the
-- key has room). Takes effect for pages written from now on.
ALTER TABLE rate_buckets SET (fillfactor = 50);
