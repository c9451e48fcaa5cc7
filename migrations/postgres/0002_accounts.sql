-- Schema version 2 of the PostgreSQL key store: VSPC profiles of users and companies, token
-- generations (a revocation moves them on, and tokens of an older generation are refused),
-- refresh-token families with a used mark (a replayed token revokes its family), and keys whose
-- status an administrator set for their owner.

ALTER TABLE tower_api_key.users ADD COLUMN profile TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tower_api_key.users ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tower_api_key.companies ADD COLUMN profile TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tower_api_key.companies ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;

ALTER TABLE tower_api_key.refresh_tokens ADD COLUMN family TEXT NOT NULL DEFAULT '';
ALTER TABLE tower_api_key.refresh_tokens ADD COLUMN user_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tower_api_key.refresh_tokens ADD COLUMN company_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tower_api_key.refresh_tokens ADD COLUMN used BOOLEAN NOT NULL DEFAULT FALSE;
-- Tokens issued before families existed are each a family of their own.
UPDATE tower_api_key.refresh_tokens SET family = encode(digest, 'hex');
CREATE INDEX refresh_tokens_family ON tower_api_key.refresh_tokens (family);

ALTER TABLE tower_api_key.api_keys ADD COLUMN status_locked BOOLEAN NOT NULL DEFAULT FALSE;

-- A revocation of tokens is a change every node must hear of, as a status change is.
DROP TRIGGER users_changed ON tower_api_key.users;
CREATE TRIGGER users_changed
    AFTER INSERT OR DELETE OR UPDATE OF uid, status, token_generation ON tower_api_key.users
    FOR EACH ROW EXECUTE FUNCTION tower_api_key.account_row_changed('user');
DROP TRIGGER companies_changed ON tower_api_key.companies;
CREATE TRIGGER companies_changed
    AFTER INSERT OR DELETE OR UPDATE OF uid, status, token_generation ON tower_api_key.companies
    FOR EACH ROW EXECUTE FUNCTION tower_api_key.account_row_changed('company');
