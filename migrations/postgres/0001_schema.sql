-- Schema version 1 of the PostgreSQL key store: the SQLite store's tables, in their own schema so
-- they sit beside an application's tables, plus triggers that announce every change on the channel
-- `tower_api_key` in the transaction that makes it.
--
-- Statuses, roles and scope names are stored as their names, never as enum positions or bit masks:
-- scope bits depend on the order in which a process registers application scopes.
-- Dates are UTC in fixed-width RFC 3339 text with nine fractional digits: byte order ("C"
-- collation) is time order, and nanoseconds survive (timestamptz keeps microseconds).
-- There are no foreign keys between keys and accounts on purpose: a key may belong to an owner
-- that has no row in `users` or `companies`.

CREATE TABLE tower_api_key.companies (
    uid    TEXT NOT NULL PRIMARY KEY,
    name   TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL
);

CREATE TABLE tower_api_key.users (
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
CREATE TABLE tower_api_key.owner_status (
    kind   TEXT NOT NULL CHECK (kind IN ('user', 'company')),
    id     TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);

CREATE TABLE tower_api_key.api_keys (
    id                 BIGINT  NOT NULL PRIMARY KEY,
    digest             BYTEA   NOT NULL,
    user_uid           TEXT    NOT NULL,
    user_name          TEXT    NOT NULL,
    company_id         TEXT    NOT NULL,
    company_name       TEXT    NOT NULL,
    description        TEXT    NOT NULL,
    -- The description lowercased with Unicode rules as Rust applies them, whatever the database's
    -- locale, so that filtering matches the other stores.
    description_folded TEXT    NOT NULL,
    read_only          BOOLEAN NOT NULL,
    -- Comma-separated scope names.
    scopes             TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    created            TEXT    NOT NULL
);

CREATE INDEX api_keys_user_uid ON tower_api_key.api_keys (user_uid);
CREATE INDEX api_keys_company_id ON tower_api_key.api_keys (company_id);

CREATE TABLE tower_api_key.refresh_tokens (
    digest    BYTEA   NOT NULL PRIMARY KEY,
    user_uid  TEXT    NOT NULL,
    read_only BOOLEAN NOT NULL,
    expires   TEXT    NOT NULL
);

CREATE INDEX refresh_tokens_user_uid ON tower_api_key.refresh_tokens (user_uid);

-- Change notification. Triggers rather than the store's own statements, so that a change made with
-- plain SQL (an operator disabling a key in psql) reaches every node as well. Payloads:
-- `key:<id>`, `deleted:<id>`, `user:<uid>:<status>`, `company:<uid>:<status>`, `resync`.

CREATE FUNCTION tower_api_key.notify(payload TEXT) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    -- NOTIFY refuses payloads of 8000 bytes or more: such a change (only possible with huge ids)
    -- tells every node to forget everything instead of failing the write.
    IF octet_length(payload) > 7900 THEN
        payload := 'resync';
    END IF;
    PERFORM pg_notify('tower_api_key', payload);
END
$$;

-- The status an owner's keys see: the account's, else the one set for the owner, else enabled.
CREATE FUNCTION tower_api_key.owner_status_of(owner_kind TEXT, owner_id TEXT) RETURNS TEXT
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT COALESCE(
        CASE owner_kind
            WHEN 'user' THEN (SELECT status FROM tower_api_key.users WHERE uid = owner_id)
            ELSE (SELECT status FROM tower_api_key.companies WHERE uid = owner_id)
        END,
        (SELECT status FROM tower_api_key.owner_status WHERE kind = owner_kind AND id = owner_id),
        'enabled')
$$;

CREATE FUNCTION tower_api_key.owner_changed(owner_kind TEXT, owner_id TEXT) RETURNS void
LANGUAGE sql SET search_path = pg_catalog AS $$
    SELECT tower_api_key.notify(
        owner_kind || ':' || owner_id || ':' || tower_api_key.owner_status_of(owner_kind, owner_id))
$$;

CREATE FUNCTION tower_api_key.key_row_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND (TG_OP = 'DELETE' OR OLD.id <> NEW.id) THEN
        PERFORM tower_api_key.notify('deleted:' || OLD.id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM tower_api_key.notify('key:' || NEW.id);
    END IF;
    RETURN NULL;
END
$$;

-- On `users` and `companies`; the argument is the owner kind.
CREATE FUNCTION tower_api_key.account_row_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM tower_api_key.owner_changed(TG_ARGV[0], OLD.uid);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM tower_api_key.owner_changed(TG_ARGV[0], NEW.uid);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION tower_api_key.owner_status_row_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM tower_api_key.owner_changed(OLD.kind, OLD.id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM tower_api_key.owner_changed(NEW.kind, NEW.id);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION tower_api_key.table_truncated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    PERFORM tower_api_key.notify('resync');
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_changed
    AFTER INSERT OR UPDATE OR DELETE ON tower_api_key.api_keys
    FOR EACH ROW EXECUTE FUNCTION tower_api_key.key_row_changed();

CREATE TRIGGER users_changed
    AFTER INSERT OR DELETE OR UPDATE OF uid, status ON tower_api_key.users
    FOR EACH ROW EXECUTE FUNCTION tower_api_key.account_row_changed('user');

CREATE TRIGGER companies_changed
    AFTER INSERT OR DELETE OR UPDATE OF uid, status ON tower_api_key.companies
    FOR EACH ROW EXECUTE FUNCTION tower_api_key.account_row_changed('company');

CREATE TRIGGER owner_status_changed
    AFTER INSERT OR UPDATE OR DELETE ON tower_api_key.owner_status
    FOR EACH ROW EXECUTE FUNCTION tower_api_key.owner_status_row_changed();

CREATE TRIGGER api_keys_truncated AFTER TRUNCATE ON tower_api_key.api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION tower_api_key.table_truncated();
CREATE TRIGGER users_truncated AFTER TRUNCATE ON tower_api_key.users
    FOR EACH STATEMENT EXECUTE FUNCTION tower_api_key.table_truncated();
CREATE TRIGGER companies_truncated AFTER TRUNCATE ON tower_api_key.companies
    FOR EACH STATEMENT EXECUTE FUNCTION tower_api_key.table_truncated();
CREATE TRIGGER owner_status_truncated AFTER TRUNCATE ON tower_api_key.owner_status
    FOR EACH STATEMENT EXECUTE FUNCTION tower_api_key.table_truncated();
