-- Schema version 3 of the PostgreSQL key store: every new refresh token deletes the expired ones,
-- so that used tokens kept to recognise a replay do not pile up; the index keeps that delete from
-- reading the whole table on every login. Dates compare as bytes ("C"), whatever the database's
-- locale, and the delete names the same collation so that it can use the index.

CREATE INDEX refresh_tokens_expires ON tower_api_key.refresh_tokens (expires COLLATE "C");
