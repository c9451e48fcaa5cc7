-- Schema version 2 of the SQLite key store: VSPC profiles of users and companies, token
-- generations (a revocation moves them on, and tokens of an older generation are refused),
-- refresh-token families with a used mark (a replayed token revokes its family), and keys whose
-- status an administrator set for their owner.

ALTER TABLE users ADD COLUMN profile TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE companies ADD COLUMN profile TEXT NOT NULL DEFAULT '{}';
ALTER TABLE companies ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;

ALTER TABLE refresh_tokens ADD COLUMN family TEXT NOT NULL DEFAULT '';
ALTER TABLE refresh_tokens ADD COLUMN user_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE refresh_tokens ADD COLUMN company_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE refresh_tokens ADD COLUMN used INTEGER NOT NULL DEFAULT 0;
-- Tokens issued before families existed are each a family of their own.
UPDATE refresh_tokens SET family = lower(hex(digest));
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

ALTER TABLE api_keys ADD COLUMN status_locked INTEGER NOT NULL DEFAULT 0;
