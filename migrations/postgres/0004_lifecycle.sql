-- Schema version 4 of the PostgreSQL key store: key lifecycle.
--
-- `expires`: when the key stops opening anything (NULL: never). `deprecated`: when a rotation
-- replaced it (it lives on until `expires`). `last_used`: when a request last used it, written in
-- batches. Dates in the fixed-width text of version 1.
ALTER TABLE tower_api_key.api_keys ADD COLUMN expires TEXT;
ALTER TABLE tower_api_key.api_keys ADD COLUMN deprecated TEXT;
ALTER TABLE tower_api_key.api_keys ADD COLUMN last_used TEXT;

CREATE INDEX api_keys_last_used ON tower_api_key.api_keys (last_used);

-- A change of `last_used` alone is no change any node decides on: announcing it would make every
-- node forget and re-read each key once per interval of use.
CREATE OR REPLACE FUNCTION tower_api_key.key_row_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (to_jsonb(OLD) - 'last_used') = (to_jsonb(NEW) - 'last_used') THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND (TG_OP = 'DELETE' OR OLD.id <> NEW.id) THEN
        PERFORM tower_api_key.notify('deleted:' || OLD.id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM tower_api_key.notify('key:' || NEW.id);
    END IF;
    RETURN NULL;
END
$$;
