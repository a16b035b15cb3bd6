-- Undo migration 0004: 0001's process_due() with its own loop, and no process_view().
CREATE OR REPLACE PROCEDURE pgops.process_due(p_lock_timeout interval DEFAULT interval '5 seconds')
LANGUAGE plpgsql AS $$
DECLARE
    candidate integer;
    result text;
BEGIN
    FOR candidate IN SELECT pgops.refresh_candidates() LOOP
        FOR attempt IN 1..3 LOOP  -- again at once after 'flipped', now that the flag's drop is committed
            PERFORM set_config('lock_timeout', (extract(epoch FROM p_lock_timeout) * 1000)::bigint::text, true);
            SELECT r.outcome INTO result FROM pgops.refresh_view(candidate) r;
            COMMIT;
            EXIT WHEN result <> 'flipped';
        END LOOP;
    END LOOP;
END
$$;
DROP PROCEDURE pgops.process_view(integer, interval, boolean, boolean, text, boolean, interval, text);
