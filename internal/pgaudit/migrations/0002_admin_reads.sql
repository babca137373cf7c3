-- Filtered reads of the history (the admin audit endpoint and the web
-- UI's audit page): each entry's event name, principal and time, and an
-- index per filter that walks newest first, so that a page is LIMIT n on
-- an index, never the whole history. Replicas fill the columns as they
-- insert (pgaudit's insertSQL); the trigger fills them from the body for
-- rows inserted without them (hearth migrate's COPY, entries stored before
-- this migration), and costs nothing otherwise (its WHEN is checked
-- without calling the function).
--
-- at_ns is the time in nanoseconds since 1970 UTC, exact: the body's time
-- is RFC 3339 in UTC with up to 9 fraction digits (audit.EncodeEvent),
-- and timestamptz would round it to microseconds, so that "since" could
-- differ from the file log's at a microsecond's edge. It is clamped to
-- bigint (times after 2262-04-11 compare equal), as pgaudit clamps a
-- query's since.
ALTER TABLE entries ADD COLUMN event text, ADD COLUMN principal text, ADD COLUMN at_ns bigint;

CREATE FUNCTION entries_fields() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	j jsonb := convert_from(NEW.body, 'UTF8')::jsonb;
	t text := j->>'time';
	ns numeric;
BEGIN
	NEW.event := j->>'event';
	NEW.principal := j->>'principal';
	ns := extract(epoch FROM (substr(t, 1, 19) || 'Z')::timestamptz) * 1000000000
		+ rpad(coalesce(substring(t FROM '\.([0-9]{1,9})Z$'), ''), 9, '0')::numeric;
	NEW.at_ns := greatest(least(ns, 9223372036854775807), -9223372036854775808)::bigint;
	RETURN NEW;
END $$;

CREATE TRIGGER entries_fields BEFORE INSERT OR UPDATE OF body ON entries
	FOR EACH ROW WHEN (NEW.event IS NULL) EXECUTE FUNCTION entries_fields();

-- Entries already there.
UPDATE entries SET body = body;

CREATE INDEX entries_event ON entries (event, seq) WHERE seq IS NOT NULL;
CREATE INDEX entries_principal ON entries (principal, seq) WHERE seq IS NOT NULL;
CREATE INDEX entries_at ON entries (at_ns) WHERE seq IS NOT NULL;
