-- Schema version 4 of the SQLite key store: key lifecycle.
--
-- `expires`: when the key stops opening anything (NULL: never). `deprecated`: when a rotation
-- replaced it (it lives on until `expires`). `last_used`: when a request last used it, written in
-- batches. Dates in the fixed-width text of version 1.
ALTER TABLE api_keys ADD COLUMN expires TEXT;
ALTER TABLE api_keys ADD COLUMN deprecated TEXT;
ALTER TABLE api_keys ADD COLUMN last_used TEXT;

-- Keys not used since a date, for listings that look for stale keys.
CREATE INDEX api_keys_last_used ON api_keys (last_used);
