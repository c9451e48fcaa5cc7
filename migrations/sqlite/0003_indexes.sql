-- Schema version 3 of the SQLite key store: indexes for what version 2 began to ask.
--
-- Every new refresh token deletes the expired ones, so that used tokens kept to recognise a replay
-- do not pile up; the index keeps that delete from reading the whole table on every login.
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires);

-- One company's users, a page at a time in the order of their names.
CREATE INDEX users_company_id ON users (company_id, user_name, uid);
