-- Filtered reads of the history (the admin audit endpoint and the web
-- UI's audit page): each entry's event name, principal and time, taken
-- from its body by a trigger (so that every way in — Record, AppendTx,
-- hearth migrate's COPY — fills them), and an index per filter that walks
-- newest first, so that a page is LIMIT n on an index, never the whole
-- history.
--
-- at_ns is the time in nanoseconds since 1970 UTC, exact: the body's time
-- is RFC 3339 in UTC with up to 9 fraction digits (audit.EncodeEvent),
-- and timestamptz would round it to microseconds, so that "since" could
-- differ from the file log's at a microsecond's edge.
ALTER TABLE entries ADD COLUMN event text, ADD COLUMN principal text, ADD COLUMN at_ns bigint;

CREATE FUNCTION entries_fields() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	j jsonb := convert_from(NEW.body, 'UTF8')::jsonb;
	t text := j->>'time';
BEGIN
	NEW.event := j->>'event';
	NEW.principal := j->>'principal';
	NEW.at_ns := extract(epoch FROM (substr(t, 1, 19) || 'Z')::timestamptz)::bigint * 1000000000
		+ rpad(coalesce(substring(t FROM '\.([0-9]{1,9})Z$'), ''), 9, '0')::bigint;
	RETURN NEW;
END $$;

CREATE TRIGGER entries_fields BEFORE INSERT OR UPDATE OF body ON entries
	FOR EACH ROW EXECUTE FUNCTION entries_fields();

-- Entries already there.
UPDATE entries SET body = body;

CREATE INDEX entries_event ON entries (event, seq) WHERE seq IS NOT NULL;
CREATE INDEX entries_principal ON entries (principal, seq) WHERE seq IS NOT NULL;
CREATE INDEX entries_at ON entries (at_ns) WHERE seq IS NOT NULL;
