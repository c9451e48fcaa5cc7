-- Schema version 3 of the PostgreSQL key store: indexes for what version 2 began to ask. Text
-- compares as bytes ("C"), whatever the database's locale, as the store's statements name it, so
-- that they can use these indexes.
--
-- Every new refresh token deletes the expired ones, so that used tokens kept to recognise a replay
-- do not pile up; the index keeps that delete from reading the whole table on every login.
CREATE INDEX refresh_tokens_expires ON tower_api_key.refresh_tokens (expires COLLATE "C");

-- Users, all or one company's, and companies, a page at a time in the order of their names.
CREATE INDEX users_by_name ON tower_api_key.users (user_name COLLATE "C", uid COLLATE "C");
CREATE INDEX users_company_id
    ON tower_api_key.users (company_id, user_name COLLATE "C", uid COLLATE "C");
CREATE INDEX companies_by_name ON tower_api_key.companies (name COLLATE "C", uid COLLATE "C");
