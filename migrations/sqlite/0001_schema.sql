-- Schema version 1 of the SQLite key store.
--
-- Statuses, roles and scope names are stored as their names, never as enum positions or bit masks:
-- scope bits depend on the order in which a process registers application scopes.
-- Dates are UTC in fixed-width RFC 3339 (nine fractional digits), so text order is time order.
-- There are no foreign keys between keys and accounts on purpose: a key may belong to an owner
-- that has no row in `users` or `companies`.

CREATE TABLE companies (
    uid    TEXT NOT NULL PRIMARY KEY,
    name   TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL
);

CREATE TABLE users (
    uid           TEXT NOT NULL PRIMARY KEY,
    user_name     TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    company_id    TEXT NOT NULL,
    status        TEXT NOT NULL,
    created       TEXT NOT NULL
);

-- Status of key owners that have no row in `users` or `companies`. An id is in at most one of
-- `users`/`companies` and this table: creating the account moves the status into its row.
CREATE TABLE owner_status (
    kind   TEXT NOT NULL CHECK (kind IN ('user', 'company')),
    id     TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;

CREATE TABLE api_keys (
    id                 INTEGER NOT NULL PRIMARY KEY,
    digest             BLOB    NOT NULL,
    user_uid           TEXT    NOT NULL,
    user_name          TEXT    NOT NULL,
    company_id         TEXT    NOT NULL,
    company_name       TEXT    NOT NULL,
    description        TEXT    NOT NULL,
    -- The description lowercased with Unicode rules, which SQLite's lower() does not know.
    description_folded TEXT    NOT NULL,
    read_only          INTEGER NOT NULL,
    -- Comma-separated scope names.
    scopes             TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    created            TEXT    NOT NULL
);

CREATE INDEX api_keys_user_uid ON api_keys (user_uid);
CREATE INDEX api_keys_company_id ON api_keys (company_id);

CREATE TABLE refresh_tokens (
    digest    BLOB    NOT NULL PRIMARY KEY,
    user_uid  TEXT    NOT NULL,
    read_only INTEGER NOT NULL,
    expires   TEXT    NOT NULL
);

CREATE INDEX refresh_tokens_user_uid ON refresh_tokens (user_uid);
