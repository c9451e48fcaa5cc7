-- Schema version 3 of the SQLite key store: every new refresh token deletes the expired ones, so
-- that used tokens kept to recognise a replay do not pile up; the index keeps that delete from
-- reading the whole table on every login.

CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires);
