//! Redis backend: keys, users, companies and refresh tokens shared by every node, with changes
//! announced through pub/sub.

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_core::Stream;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::codec::{
    format_date, format_profile, format_scopes, in_key, parse_date, parse_digest, parse_generation,
    parse_profile, parse_scopes, parse_status,
};
use super::notify::{self, encode_event, Notifier, Subscription, Timing};
use super::{
    AccountStore, ChangeEvent, ChangeStream, Company, CompanyProfile, KeyRecord, KeyStore,
    KeyUpdate, ListQuery, Owner, Page, RefreshToken, RefreshUse, Role, SortField, StoreError, User,
    UserProfile,
};
use crate::identity::Status;
use crate::key::{KeyId, SecretDigest};

/// How long connecting, and each command, may take before the call fails.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait, in milliseconds, before the connection is tried again after it failed.
const RECONNECT_DELAY_MS: u64 = 500;

/// Records one script reads when a listing reads them all, and ids one `SSCAN` asks for while the
/// listing indexes are built: small enough that no script holds the server for long.
const SCAN_BATCH: usize = 256;

/// Reads one key with the current status of its owner; `{'id', id}` alone when the key has no hash.
/// Every script is given the prefix as `ARGV[1]` and builds its key names from it.
const RECORD_FN: &str = r"
local function record(p, id)
  local h = redis.call('HGETALL', p .. 'key:' .. id)
  local uid, cid
  for i = 1, #h, 2 do
    if h[i] == 'user_uid' then uid = h[i + 1] elseif h[i] == 'company_id' then cid = h[i + 1] end
  end
  local r = {'id', id}
  if #h == 0 then return r end
  for i = 1, #h do r[#r + 1] = h[i] end
  r[#r + 1] = 'user_status'
  r[#r + 1] = (uid and redis.call('HGET', p .. 'user-status', uid)) or 'enabled'
  r[#r + 1] = 'company_status'
  r[#r + 1] = (cid and redis.call('HGET', p .. 'company-status', cid)) or 'enabled'
  return r
end
";

/// `ARGV`: prefix, id. The record, or nil.
const GET: &str = r"
if redis.call('EXISTS', ARGV[1] .. 'key:' .. ARGV[2]) == 0 then return false end
return record(ARGV[1], ARGV[2])
";

/// `ARGV`: prefix, id, user uid, change payload, then the hash's fields and values. 1, or 0 when
/// the id is taken.
const INSERT: &str = r"
local p, id = ARGV[1], ARGV[2]
local k = p .. 'key:' .. id
if redis.call('EXISTS', k) == 1 then return 0 end
redis.call('HSET', k, unpack(ARGV, 5))
redis.call('SADD', p .. 'keys', id)
redis.call('SADD', p .. 'user-keys:' .. ARGV[3], id)
index_key(p, id)
redis.call('PUBLISH', p .. 'changes', ARGV[4])
return 1
";

/// `ARGV`: prefix, id, change payload, new status or '', '1' and the new description or '0' and
/// '', new status lock ('0', '1') or '', deprecation and expiry of a retirement or '' and ''. Dates
/// are fixed-width UTC text, so the earlier one is the smaller string. The record as it now is, or
/// nil.
const UPDATE: &str = r"
local p, id = ARGV[1], ARGV[2]
local k = p .. 'key:' .. id
if redis.call('EXISTS', k) == 0 then return false end
if ARGV[4] ~= '' then redis.call('HSET', k, 'status', ARGV[4]) end
if ARGV[5] == '1' then
  unindex_key(p, id)
  redis.call('HSET', k, 'description', ARGV[6])
  index_key(p, id)
end
if ARGV[7] ~= '' then redis.call('HSET', k, 'status_locked', ARGV[7]) end
if ARGV[8] ~= '' then
  for i, field in ipairs({'deprecated', 'expires'}) do
    local was = redis.call('HGET', k, field)
    if not was or was == '' or was > ARGV[7 + i] then redis.call('HSET', k, field, ARGV[7 + i]) end
  end
end
redis.call('PUBLISH', p .. 'changes', ARGV[3])
return record(p, id)
";

/// `ARGV`: prefix, then ids and dates in pairs. Sets each existing key's `last_used` unless it is
/// later already; announces nothing, since no node decides on it.
const RECORD_USE: &str = r"
local p = ARGV[1]
for i = 2, #ARGV, 2 do
  local k = p .. 'key:' .. ARGV[i]
  if redis.call('EXISTS', k) == 1 then
    local was = redis.call('HGET', k, 'last_used')
    if not was or was < ARGV[i + 1] then redis.call('HSET', k, 'last_used', ARGV[i + 1]) end
  end
end
return 0
";

/// `ARGV`: prefix, id, change payload. 1, or 0 when there was no such key.
const DELETE: &str = r"
local p, id = ARGV[1], ARGV[2]
local k = p .. 'key:' .. id
if redis.call('EXISTS', k) == 0 then return 0 end
local uid = redis.call('HGET', k, 'user_uid')
unindex_key(p, id)
redis.call('DEL', k)
redis.call('SREM', p .. 'keys', id)
if uid then redis.call('SREM', p .. 'user-keys:' .. uid, id) end
redis.call('PUBLISH', p .. 'changes', ARGV[3])
return 1
";

/// `ARGV`: prefix, user uid. Every record of that user.
const LIST_USER_KEYS: &str = r"
local p = ARGV[1]
local ids = redis.call('SMEMBERS', p .. 'user-keys:' .. ARGV[2])
local out = {}
for i = 1, #ids do out[i] = record(p, ids[i]) end
return out
";

/// `ARGV`: prefix, owner kind (`user` or `company`), id, status, change payload.
const SET_OWNER_STATUS: &str = r"
local p = ARGV[1]
redis.call('HSET', p .. ARGV[2] .. '-status', ARGV[3], ARGV[4])
redis.call('PUBLISH', p .. 'changes', ARGV[5])
return 1
";

/// `ARGV`: prefix, owner kind, id, name, status, change payload, then the hash's fields and values.
/// Creates a user or company: 1, or 0 when the id or name is taken.
const CREATE_ACCOUNT: &str = r"
local p, kind, id, name = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local names = p .. kind .. '-names'
if redis.call('EXISTS', p .. kind .. ':' .. id) == 1 or redis.call('HEXISTS', names, name) == 1 then
  return 0
end
redis.call('HSET', p .. kind .. ':' .. id, unpack(ARGV, 7))
redis.call('HSET', names, name, id)
redis.call('SADD', p .. kind .. '-ids', id)
index_account(p, kind, id)
redis.call('HSET', p .. kind .. '-status', id, ARGV[5])
redis.call('PUBLISH', p .. 'changes', ARGV[6])
return 1
";

/// `ARGV`: prefix, owner kind, then `id` and an id, or `name` and a name. The matching account
/// with its status, or nothing.
const ACCOUNTS: &str = r"
local p, kind = ARGV[1], ARGV[2]
local ids
if ARGV[3] == 'id' then ids = {ARGV[4]}
else
  local id = redis.call('HGET', p .. kind .. '-names', ARGV[4])
  ids = id and {id} or {}
end
local out = {}
for i = 1, #ids do
  local h = redis.call('HGETALL', p .. kind .. ':' .. ids[i])
  if #h > 0 then
    h[#h + 1] = 'status'
    h[#h + 1] = redis.call('HGET', p .. kind .. '-status', ids[i]) or 'enabled'
    out[#out + 1] = h
  end
end
return out
";

/// `ARGV`: prefix, digest (hex), expiry (Unix milliseconds), user uid, family, then the hash's
/// fields and values. The token's hash expires with it.
const PUT_REFRESH_TOKEN: &str = r"
local p, hex, uid, family = ARGV[1], ARGV[2], ARGV[4], ARGV[5]
local k = p .. 'refresh:' .. hex
local old = redis.call('HMGET', k, 'user_uid', 'family')
if old[1] then redis.call('SREM', p .. 'user-refresh:' .. old[1], hex) end
if old[2] then redis.call('SREM', p .. 'refresh-family:' .. old[2], hex) end
redis.call('DEL', k)
redis.call('HSET', k, unpack(ARGV, 6))
redis.call('HSET', k, 'used', '0')
redis.call('PEXPIREAT', k, ARGV[3])
-- The sets live as long as their newest token, so expired tokens leave nothing behind.
for _, set in ipairs({p .. 'user-refresh:' .. uid, p .. 'refresh-family:' .. family}) do
  redis.call('SADD', set, hex)
  if redis.call('PTTL', set) < 0 or redis.call('PEXPIRETIME', set) < tonumber(ARGV[3]) then
    redis.call('PEXPIREAT', set, ARGV[3])
  end
end
return 1
";

/// `ARGV`: prefix, digest (hex). The token's fields as they were, marked used, or nil.
const TAKE_REFRESH_TOKEN: &str = r"
local p, hex = ARGV[1], ARGV[2]
local k = p .. 'refresh:' .. hex
local h = redis.call('HGETALL', k)
if #h == 0 then return false end
redis.call('HSET', k, 'used', '1')
-- A token stored before families existed is a family of its own, as the SQL migration makes it.
if redis.call('HEXISTS', k, 'family') == 0 then
  redis.call('HSET', k, 'family', hex)
  redis.call('SADD', p .. 'refresh-family:' .. hex, hex)
  h[#h + 1] = 'family'
  h[#h + 1] = hex
end
return h
";

/// Removes the refresh tokens whose digests (hex) are in the set `set`, and the set: how many.
const REMOVE_REFRESH_FN: &str = r"
local function remove_refresh(p, set)
  local hexes = redis.call('SMEMBERS', set)
  local n = 0
  for i = 1, #hexes do
    local k = p .. 'refresh:' .. hexes[i]
    local owner = redis.call('HMGET', k, 'user_uid', 'family')
    if owner[1] then redis.call('SREM', p .. 'user-refresh:' .. owner[1], hexes[i]) end
    if owner[2] then redis.call('SREM', p .. 'refresh-family:' .. owner[2], hexes[i]) end
    n = n + redis.call('DEL', k)
  end
  redis.call('DEL', set)
  return n
end
";

/// `ARGV`: prefix, family. How many tokens were removed.
const REVOKE_REFRESH_FAMILY: &str = r"
return remove_refresh(ARGV[1], ARGV[1] .. 'refresh-family:' .. ARGV[2])
";

/// `ARGV`: prefix, owner kind (`user` or `company`), id. Moves the account's token generation on,
/// removes a user's refresh tokens, and publishes the account's change with its status: the new
/// generation, or nil when there is no such account.
const REVOKE_TOKENS: &str = r"
local p, kind, id = ARGV[1], ARGV[2], ARGV[3]
local k = p .. kind .. ':' .. id
if redis.call('EXISTS', k) == 0 then return false end
local generation = redis.call('HINCRBY', k, 'token_generation', 1)
if kind == 'user' then remove_refresh(p, p .. 'user-refresh:' .. id) end
local status = redis.call('HGET', p .. kind .. '-status', id) or 'enabled'
local payload = kind .. ':' .. id .. ':' .. status
if #payload > 7900 then payload = 'resync' end
redis.call('PUBLISH', p .. 'changes', payload)
return generation
";

/// `ARGV`: prefix, owner kind, id, profile (JSON). The account with its status, or nil.
const SET_PROFILE: &str = r"
local p, kind, id = ARGV[1], ARGV[2], ARGV[3]
local k = p .. kind .. ':' .. id
if redis.call('EXISTS', k) == 0 then return false end
redis.call('HSET', k, 'profile', ARGV[4])
local h = redis.call('HGETALL', k)
h[#h + 1] = 'status'
h[#h + 1] = redis.call('HGET', p .. kind .. '-status', id) or 'enabled'
return h
";

/// The listing indexes, kept by every write of a key or account in the same script.
///
/// Keys: `<prefix>keys-by-id` (scored by id) and `<prefix>keys-by-created`, `-description`,
/// `-user-name` (all scored 0, ordered by member: the field, escaped so that byte order survives,
/// then the id in 16 digits, so ties fall to the id as in [`ListQuery::apply`]). Accounts:
/// `<prefix>user-by-name`, `<prefix>company-by-name` and `<prefix>company-users:<company id>`,
/// whose members are the (unique) names. `<prefix>listing-index` says the indexes were built for
/// records written before they existed.
const INDEX_FN: &str = r"
local function lex(text, id)
  return (string.gsub(text, '%z', '\0\255')) .. '\0\0' .. string.rep('0', 16 - #id) .. id
end
local function key_fields(p, id)
  local f = redis.call('HMGET', p .. 'key:' .. id, 'created', 'description', 'user_name')
  return f[1] or '', f[2] or '', f[3] or ''
end
local function index_key(p, id)
  local created, description, user_name = key_fields(p, id)
  redis.call('ZADD', p .. 'keys-by-id', id, id)
  redis.call('ZADD', p .. 'keys-by-created', 0, lex(created, id))
  redis.call('ZADD', p .. 'keys-by-description', 0, lex(description, id))
  redis.call('ZADD', p .. 'keys-by-user-name', 0, lex(user_name, id))
end
local function unindex_key(p, id)
  local created, description, user_name = key_fields(p, id)
  redis.call('ZREM', p .. 'keys-by-id', id)
  redis.call('ZREM', p .. 'keys-by-created', lex(created, id))
  redis.call('ZREM', p .. 'keys-by-description', lex(description, id))
  redis.call('ZREM', p .. 'keys-by-user-name', lex(user_name, id))
end
local function index_account(p, kind, id)
  local name_field = kind == 'user' and 'user_name' or 'name'
  local f = redis.call('HMGET', p .. kind .. ':' .. id, name_field, 'company_id')
  if not f[1] then return end
  redis.call('ZADD', p .. kind .. '-by-name', 0, f[1])
  if kind == 'user' and f[2] then redis.call('ZADD', p .. 'company-users:' .. f[2], 0, f[1]) end
end
-- 0 when the key indexes hold every key, 1 when some are missing, 2 when they hold more.
local function keys_state(p)
  if redis.call('EXISTS', p .. 'listing-index') == 0 then return 1 end
  local indexed, listed = redis.call('ZCARD', p .. 'keys-by-id'), redis.call('SCARD', p .. 'keys')
  if indexed < listed then return 1 elseif indexed > listed then return 2 end
  return 0
end
local function accounts_state(p)
  if redis.call('EXISTS', p .. 'listing-index') == 0 then return 1 end
  for _, kind in ipairs({'user', 'company'}) do
    if redis.call('ZCARD', p .. kind .. '-by-name') ~= redis.call('SCARD', p .. kind .. '-ids') then
      return 1
    end
  end
  return 0
end
local function id_of(index, member)
  if index == 'id' then return member end
  return (string.gsub(string.sub(member, -16), '^0+', ''))
end
";

/// `ARGV`: prefix, index (`id`, `created`, `description`, `user-name`), descending (`1`, `0`),
/// first and last rank, check (`1`: first say whether the indexes are complete). `{state, total,
/// records}`: state 0 with every key's count and the records at those ranks, or another state
/// (see `keys_state`) and nothing.
const PAGE_KEYS: &str = r"
local p, index = ARGV[1], ARGV[2]
if ARGV[6] == '1' then
  local state = keys_state(p)
  if state ~= 0 then return {state, 0, {}} end
end
local z = p .. 'keys-by-' .. index
local members
if ARGV[3] == '1' then members = redis.call('ZRANGE', z, ARGV[4], ARGV[5], 'REV')
else members = redis.call('ZRANGE', z, ARGV[4], ARGV[5]) end
local out = {}
for i = 1, #members do out[i] = record(p, id_of(index, members[i])) end
return {0, redis.call('SCARD', p .. 'keys'), out}
";

/// `ARGV`: prefix, index, descending, cursor (the last member seen, or empty to start), count,
/// with description (`1`, `0`), check. `{state, last member, briefs}`: the next `count` keys in
/// index order after the cursor, each as what a listing filters on: `{id, status, user status,
/// company status, description or '', last used or ''}`, or `{id}` when the key has no hash.
const SCAN_KEYS: &str = r"
local p, index, rev, cursor, count = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4], ARGV[5]
local with_description = ARGV[6] == '1'
if ARGV[7] == '1' then
  local state = keys_state(p)
  if state ~= 0 then return {state, '', {}} end
end
local z = p .. 'keys-by-' .. index
local members
if index == 'id' then
  local from = cursor == '' and (rev and '+inf' or '-inf') or '(' .. cursor
  local to = rev and '-inf' or '+inf'
  if rev then members = redis.call('ZRANGE', z, from, to, 'BYSCORE', 'REV', 'LIMIT', 0, count)
  else members = redis.call('ZRANGE', z, from, to, 'BYSCORE', 'LIMIT', 0, count) end
else
  local from = cursor == '' and (rev and '+' or '-') or '(' .. cursor
  local to = rev and '-' or '+'
  if rev then members = redis.call('ZRANGE', z, from, to, 'BYLEX', 'REV', 'LIMIT', 0, count)
  else members = redis.call('ZRANGE', z, from, to, 'BYLEX', 'LIMIT', 0, count) end
end
local out = {}
for i = 1, #members do
  local id = id_of(index, members[i])
  local f = redis.call('HMGET', p .. 'key:' .. id, 'status', 'user_uid', 'company_id', 'description', 'last_used')
  if f[1] then
    out[i] = {
      id, f[1],
      (f[2] and redis.call('HGET', p .. 'user-status', f[2])) or 'enabled',
      (f[3] and redis.call('HGET', p .. 'company-status', f[3])) or 'enabled',
      (with_description and f[4]) or '', f[5] or ''}
  else out[i] = {id} end
end
return {0, members[#members] or '', out}
";

/// `ARGV`: prefix, ids. The records of those keys that still exist, in that order.
const RECORDS: &str = r"
local out = {}
for i = 2, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. 'key:' .. ARGV[i]) == 1 then out[#out + 1] = record(ARGV[1], ARGV[i]) end
end
return out
";

/// `ARGV`: prefix, owner kind, index (`user-by-name`, `company-by-name` or
/// `company-users:<company id>`), first and last rank, check. `{state, total, accounts}` as
/// `PAGE_KEYS` answers, each account with its status.
const PAGE_ACCOUNTS: &str = r"
local p, kind = ARGV[1], ARGV[2]
if ARGV[6] == '1' then
  local state = accounts_state(p)
  if state ~= 0 then return {state, 0, {}} end
end
local z = p .. ARGV[3]
local names = redis.call('ZRANGE', z, ARGV[4], ARGV[5])
local out = {}
for i = 1, #names do
  local id = redis.call('HGET', p .. kind .. '-names', names[i])
  local h = id and redis.call('HGETALL', p .. kind .. ':' .. id) or {}
  h[#h + 1] = 'status'
  h[#h + 1] = (id and redis.call('HGET', p .. kind .. '-status', id)) or 'enabled'
  out[i] = h
end
return {0, redis.call('ZCARD', z), out}
";

/// `ARGV`: prefix, `keys` or an owner kind, ids. Adds those keys or accounts to the listing indexes.
const INDEX_RECORDS: &str = r"
local p, what = ARGV[1], ARGV[2]
for i = 3, #ARGV do
  if what == 'keys' then
    if redis.call('EXISTS', p .. 'key:' .. ARGV[i]) == 1 then index_key(p, ARGV[i]) end
  else index_account(p, what, ARGV[i]) end
end
return 1
";

/// The store's scripts, loaded once per store (Redis caches them by digest).
struct Scripts {
    get: Script,
    insert: Script,
    update: Script,
    record_use: Script,
    delete: Script,
    list_user_keys: Script,
    page_keys: Script,
    scan_keys: Script,
    records: Script,
    page_accounts: Script,
    index_records: Script,
    set_owner_status: Script,
    create_account: Script,
    accounts: Script,
    put_refresh_token: Script,
    take_refresh_token: Script,
    revoke_refresh_family: Script,
    revoke_tokens: Script,
    set_profile: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_record = |body: &str| Script::new(&format!("{RECORD_FN}{body}"));
        let with_index = |body: &str| Script::new(&format!("{RECORD_FN}{INDEX_FN}{body}"));
        let with_remove = |body: &str| Script::new(&format!("{REMOVE_REFRESH_FN}{body}"));
        Self {
            get: with_record(GET),
            insert: with_index(INSERT),
            update: with_index(UPDATE),
            record_use: Script::new(RECORD_USE),
            delete: with_index(DELETE),
            list_user_keys: with_record(LIST_USER_KEYS),
            page_keys: with_index(PAGE_KEYS),
            scan_keys: with_index(SCAN_KEYS),
            records: with_record(RECORDS),
            page_accounts: with_index(PAGE_ACCOUNTS),
            index_records: with_index(INDEX_RECORDS),
            set_owner_status: Script::new(SET_OWNER_STATUS),
            create_account: with_index(CREATE_ACCOUNT),
            accounts: Script::new(ACCOUNTS),
            put_refresh_token: Script::new(PUT_REFRESH_TOKEN),
            take_refresh_token: Script::new(TAKE_REFRESH_TOKEN),
            revoke_refresh_family: with_remove(REVOKE_REFRESH_FAMILY),
            revoke_tokens: with_remove(REVOKE_TOKENS),
            set_profile: Script::new(SET_PROFILE),
        }
    }
}

/// A store in Redis that any number of nodes share.
///
/// Every Redis key the store uses starts with a prefix ([`RedisStore::DEFAULT_PREFIX`] unless
/// [`RedisStore::connect_with_prefix`] names another), so several stores can share a database. A
/// key is a hash at `<prefix>key:<id>`, listed in the sets `<prefix>keys` and
/// `<prefix>user-keys:<uid>`; user and company statuses are the hashes `<prefix>user-status` and
/// `<prefix>company-status`, so owners need no account; accounts and refresh tokens are hashes
/// beside them. Each write is one Lua script (atomic) that publishes its change on
/// `<prefix>changes` after writing, so nodes hear changes in the order they were made.
/// [`KeyStore::subscribe`] listens on a connection of its own; when it drops, or a ping it sends
/// itself every 10 s is not back within 5 s, it reconnects with backoff (up to 1 s between
/// attempts) and yields [`ChangeEvent::Resync`] when the channel is lost, at each failed attempt
/// and once subscribed again, so a lost message never leaves a revoked key usable. Changes
/// written to Redis other than through a `RedisStore` are not announced.
///
/// Listings read one page: sorted sets kept by the same scripts that write the records
/// (`<prefix>keys-by-id`, `keys-by-created`, `keys-by-description`, `keys-by-user-name`,
/// `user-by-name`, `company-by-name`, `company-users:<company id>`) give
/// [`AccountStore::list_users`], [`AccountStore::list_companies`] and an unfiltered
/// [`KeyStore::list`] in any order but effective status their page with `ZRANGE`, and the count
/// with `ZCARD`/`SCARD`. Two kinds of key listing read more: one that names a user reads all of
/// that user's keys (as many as the management API lets a user hold) and pages them in Rust; one
/// with a status or description filter, or in the order of effective status (which moves with the
/// owner's status, so no index keeps it), reads every key in index order, 256 to a script, keeping
/// only the page (twice over for the order of effective status: once to count each status, once
/// for the page). Such a listing costs time linear in the number of keys but holds one batch and
/// one page in memory, never blocks the server for more than one batch, and is not one snapshot:
/// a key written meanwhile may or may not be counted. Records written before the indexes existed
/// are indexed by the first listing that finds them missing, a batch at a time. Scripts name keys
/// they compute, so the store needs one Redis server (with replicas, if any), not Redis Cluster.
///
/// Scopes are stored by name: application scopes must be registered with
/// [`Scope::register`](crate::Scope::register) before their keys are read. Fields that cannot be
/// read back make the record corrupt ([`StoreError::is_corrupt`]). Cloning shares the connection.
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
    location: Arc<str>,
}

impl RedisStore {
    /// The prefix of every Redis key the store uses, unless another is given.
    pub const DEFAULT_PREFIX: &'static str = "tower-api-key:";

    /// Connects to the Redis server at `url` (`redis://[user][:password@]host[:port][/db]`, or
    /// `rediss://…` when the redis crate is built with TLS), with the keys under
    /// [`RedisStore::DEFAULT_PREFIX`].
    ///
    /// `Err` when the URL is not a Redis URL or the server cannot be reached or refuses the login.
    /// The error never shows the password.
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        Self::connect_with_prefix(url, Self::DEFAULT_PREFIX).await
    }

    /// As [`RedisStore::connect`], with every Redis key (and the change channel) under `prefix`.
    /// Stores with different prefixes in one database do not see each other.
    pub async fn connect_with_prefix(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(StoreError::backend("not a redis:// URL"));
        }
        // The redis crate's message may quote the URL; say only that it could not be read.
        let client =
            Client::open(url).map_err(|_| StoreError::backend("unreadable redis:// URL"))?;
        let info = client.get_connection_info();
        let location = format!("{}/{} {prefix}", info.addr, info.redis.db);
        // One quick retry: the crate's default backoff waits a minute or more before giving up,
        // while callers (a starting server, a lookup under its timeout) want an answer now; a
        // later call reconnects again.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
            .set_number_of_retries(1)
            .set_factor(2)
            .set_max_delay(RECONNECT_DELAY_MS);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(StoreError::backend)?;
        Ok(RedisStore {
            client,
            conn,
            prefix: prefix.into(),
            scripts: Arc::new(Scripts::new()),
            location: location.into(),
        })
    }

    /// The prefix of every Redis key this store uses.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn channel(&self) -> String {
        format!("{}changes", self.prefix)
    }

    async fn set_owner_status(
        &self,
        kind: &str,
        id: &str,
        event: ChangeEvent,
        status: Status,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .set_owner_status
            .prepare_invoke()
            .arg(&*self.prefix)
            .arg(kind)
            .arg(id)
            .arg(status.as_str())
            .arg(encode_event(&event))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    /// The accounts of `kind` selected by `by` (`id`, `name` or `all`) and `value`.
    async fn accounts(&self, kind: &str, by: &str, value: &str) -> Result<Vec<Fields>, StoreError> {
        let rows: Vec<Vec<Vec<u8>>> = self
            .scripts
            .accounts
            .prepare_invoke()
            .arg(&*self.prefix)
            .arg(kind)
            .arg(by)
            .arg(value)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        Ok(rows.into_iter().map(Fields::new).collect())
    }

    /// Moves the token generation of the account `id` of `kind` on (see
    /// [`AccountStore::revoke_user_tokens`]).
    async fn revoke_tokens(&self, kind: &str, id: &str) -> Result<Option<u64>, StoreError> {
        let generation: Option<i64> = self
            .scripts
            .revoke_tokens
            .prepare_invoke()
            .arg(&*self.prefix)
            .arg(kind)
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        generation.map(parse_generation).transpose()
    }

    /// Replaces the profile of the account `id` of `kind`: its fields as they now are, or `None`.
    async fn set_profile(
        &self,
        kind: &str,
        id: &str,
        profile: &str,
    ) -> Result<Option<Fields>, StoreError> {
        let fields: Option<Vec<Vec<u8>>> = self
            .scripts
            .set_profile
            .prepare_invoke()
            .arg(&*self.prefix)
            .arg(kind)
            .arg(id)
            .arg(profile)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        Ok(fields.map(Fields::new))
    }

    /// Creates the account `uid` of `kind` with `fields`, unless one with that uid or `name` exists
    /// (a conflict), and publishes `event` with it.
    async fn create_account(
        &self,
        kind: &str,
        uid: &str,
        name: &str,
        status: Status,
        event: &ChangeEvent,
        fields: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let mut invocation = self.scripts.create_account.prepare_invoke();
        invocation
            .arg(&*self.prefix)
            .arg(kind)
            .arg(uid)
            .arg(name)
            .arg(status.as_str())
            .arg(encode_event(event));
        for (field, value) in fields {
            invocation.arg(*field).arg(*value);
        }
        let created: i64 = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        if created == 0 {
            return Err(StoreError::conflict());
        }
        Ok(())
    }
}

impl RedisStore {
    /// Runs a listing script, checking first that the indexes hold every record; when they do not
    /// (records written before they existed, or by an older version), builds them and runs it
    /// again without the check.
    async fn listed<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        args: &[&[u8]],
    ) -> Result<(T, Vec<Vec<Vec<u8>>>), StoreError> {
        for check in [true, false] {
            let mut invocation = script.prepare_invoke();
            invocation.arg(&*self.prefix);
            for arg in args {
                invocation.arg(*arg);
            }
            let (state, head, rows): Listed<T> = invocation
                .arg(flag(check))
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(StoreError::backend)?;
            if state == 0 {
                return Ok((head, rows));
            }
            self.build_indexes(state == 2).await?;
        }
        Err(StoreError::backend(
            "listing index still incomplete after a rebuild",
        ))
    }

    /// Adds every key and account to the listing indexes, a batch at a time so that no script
    /// holds the server for long; with `afresh`, first drops the key indexes, which hold keys that
    /// are gone. Writes made meanwhile keep the indexes themselves.
    async fn build_indexes(&self, afresh: bool) -> Result<(), StoreError> {
        let p = &*self.prefix;
        let mut conn = self.conn.clone();
        if afresh {
            let _: i64 = redis::cmd("DEL")
                .arg(format!("{p}keys-by-id"))
                .arg(format!("{p}keys-by-created"))
                .arg(format!("{p}keys-by-description"))
                .arg(format!("{p}keys-by-user-name"))
                .query_async(&mut conn)
                .await
                .map_err(StoreError::backend)?;
        }
        for (set, what) in [
            ("keys", "keys"),
            ("user-ids", "user"),
            ("company-ids", "company"),
        ] {
            let mut cursor = 0u64;
            loop {
                let (next, ids): (u64, Vec<Vec<u8>>) = redis::cmd("SSCAN")
                    .arg(format!("{p}{set}"))
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(SCAN_BATCH)
                    .query_async(&mut conn)
                    .await
                    .map_err(StoreError::backend)?;
                if !ids.is_empty() {
                    let mut invocation = self.scripts.index_records.prepare_invoke();
                    invocation.arg(p).arg(what);
                    for id in &ids {
                        invocation.arg(&id[..]);
                    }
                    let _: i64 = invocation
                        .invoke_async(&mut conn)
                        .await
                        .map_err(StoreError::backend)?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let _: () = redis::cmd("SET")
            .arg(format!("{p}listing-index"))
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    /// One page of every key in the order of `index`, read in one script: `limit` records at most.
    async fn indexed_keys(
        &self,
        index: &str,
        query: &ListQuery,
    ) -> Result<Page<KeyRecord>, StoreError> {
        let (first, last) = ranks(query.offset, query.limit);
        let (total, rows): (u64, _) = self
            .listed(
                &self.scripts.page_keys,
                &[
                    index.as_bytes(),
                    flag(query.descending).as_bytes(),
                    first.to_string().as_bytes(),
                    last.to_string().as_bytes(),
                ],
            )
            .await?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(|row| decode_key(&Fields::new(row)))
                .collect::<Result<_, _>>()?,
            total,
        })
    }

    /// Calls `visit` with what a listing filters on of every key, in the order of `index`,
    /// [`SCAN_BATCH`] keys a script; descriptions are empty unless `with_description`.
    async fn scan_keys(
        &self,
        index: &str,
        descending: bool,
        with_description: bool,
        mut visit: impl FnMut(Brief),
    ) -> Result<(), StoreError> {
        let mut cursor = Vec::new();
        let batch = SCAN_BATCH.to_string();
        loop {
            let (last, rows): (Vec<u8>, _) = self
                .listed(
                    &self.scripts.scan_keys,
                    &[
                        index.as_bytes(),
                        flag(descending).as_bytes(),
                        &cursor,
                        batch.as_bytes(),
                        flag(with_description).as_bytes(),
                    ],
                )
                .await?;
            let full = rows.len() == SCAN_BATCH;
            for row in rows {
                visit(Brief::decode(row)?);
            }
            if !full {
                return Ok(());
            }
            cursor = last;
        }
    }

    /// One page of a listing no index serves (a status or description filter, or the order of
    /// effective status): every key is read a batch at a time, as no more than what the filters
    /// need, and only the page's records are read whole.
    async fn scanned_keys(
        &self,
        index: &str,
        query: &ListQuery,
    ) -> Result<Page<KeyRecord>, StoreError> {
        // `ListQuery::matches` on what a brief holds (the user filter never comes here).
        let needle = query.description_contains.as_deref().map(str::to_lowercase);
        let matches = |brief: &Brief| {
            query.status.is_none_or(|status| brief.status == status)
                && needle
                    .as_deref()
                    .is_none_or(|n| brief.description.to_lowercase().contains(n))
                && query
                    .unused_since
                    .is_none_or(|since| brief.last_used.is_none_or(|used| used < since))
        };
        let with_description = needle.is_some();
        let window = |rank: u64| rank >= query.offset && rank - query.offset < query.limit;
        let mut ids = Vec::new();
        let total;
        if query.sort == SortField::Status {
            // Effective status moves with the owner's, so no index keeps it: one pass counts the
            // keys of each status, the next picks those whose rank falls in the page.
            let mut counts: Vec<(&'static str, u64)> = Vec::new();
            self.scan_keys("id", query.descending, with_description, |brief| {
                if matches(&brief) {
                    let status = brief.status.as_str();
                    match counts.iter_mut().find(|(s, _)| *s == status) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((status, 1)),
                    }
                }
            })
            .await?;
            counts.sort_unstable();
            if query.descending {
                counts.reverse();
            }
            total = counts.iter().map(|(_, n)| n).sum();
            // Each status's next rank in the listing.
            let mut next: Vec<(&'static str, u64)> = counts
                .iter()
                .scan(0, |start, &(status, n)| {
                    let first = *start;
                    *start += n;
                    Some((status, first))
                })
                .collect();
            if query.limit > 0 && query.offset < total {
                self.scan_keys("id", query.descending, with_description, |brief| {
                    if !matches(&brief) {
                        return;
                    }
                    let status = brief.status.as_str();
                    if let Some((_, rank)) = next.iter_mut().find(|(s, _)| *s == status) {
                        if window(*rank) {
                            ids.push(brief.id);
                        }
                        *rank += 1;
                    }
                })
                .await?;
            }
        } else {
            let mut seen = 0;
            self.scan_keys(index, query.descending, with_description, |brief| {
                if matches(&brief) {
                    if window(seen) {
                        ids.push(brief.id);
                    }
                    seen += 1;
                }
            })
            .await?;
            total = seen;
        }
        let mut items = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SCAN_BATCH) {
            let mut invocation = self.scripts.records.prepare_invoke();
            invocation.arg(&*self.prefix);
            for id in chunk {
                invocation.arg(id.get());
            }
            let rows: Vec<Vec<Vec<u8>>> = invocation
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(StoreError::backend)?;
            for row in rows {
                items.push(decode_key(&Fields::new(row))?);
            }
        }
        // In the listing's order (for effective status, the page was picked in id order), and
        // without keys changed since the scan so that they no longer match.
        let order = ListQuery {
            offset: 0,
            limit: u64::MAX,
            ..query.clone()
        };
        Ok(Page {
            items: order.apply(items).items,
            total,
        })
    }

    /// One page of the accounts of `kind` in the order of `index`: `limit` accounts at most.
    async fn page_accounts(
        &self,
        kind: &str,
        index: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Fields>), StoreError> {
        let (first, last) = ranks(offset, limit);
        let (total, rows): (u64, _) = self
            .listed(
                &self.scripts.page_accounts,
                &[
                    kind.as_bytes(),
                    index.as_bytes(),
                    first.to_string().as_bytes(),
                    last.to_string().as_bytes(),
                ],
            )
            .await?;
        Ok((total, rows.into_iter().map(Fields::new).collect()))
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("location", &self.location)
            .finish()
    }
}

/// A hash as read from Redis: field names to values.
struct Fields(HashMap<Vec<u8>, Vec<u8>>);

impl Fields {
    fn new(flat: Vec<Vec<u8>>) -> Self {
        let mut map = HashMap::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(field), Some(value)) = (items.next(), items.next()) {
            map.insert(field, value);
        }
        Self(map)
    }

    fn bytes(&self, name: &str) -> Result<&[u8], StoreError> {
        self.0
            .get(name.as_bytes())
            .map(Vec::as_slice)
            .ok_or_else(|| StoreError::corrupt(format!("field `{name}` missing")))
    }

    fn text(&self, name: &str) -> Result<&str, StoreError> {
        std::str::from_utf8(self.bytes(name)?)
            .map_err(|_| StoreError::corrupt(format!("field `{name}` is not UTF-8")))
    }

    fn string(&self, name: &str) -> Result<String, StoreError> {
        self.text(name).map(str::to_owned)
    }

    /// A field that records written by earlier versions lack.
    fn optional(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name.as_bytes()).map(Vec::as_slice)
    }

    /// A date that may be missing or empty.
    fn optional_date(&self, name: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        match self.optional(name) {
            None | Some(b"") => Ok(None),
            Some(_) => parse_date(self.text(name)?).map(Some),
        }
    }

    /// An account's profile; `{}` for accounts written before profiles existed.
    fn profile<T: serde::de::DeserializeOwned + Default>(&self) -> Result<T, StoreError> {
        match self.optional("profile") {
            None => Ok(T::default()),
            Some(_) => parse_profile(self.text("profile")?),
        }
    }

    /// A token generation; 0 when the field is missing (written before generations existed).
    fn generation(&self, name: &str) -> Result<u64, StoreError> {
        match self.optional(name) {
            None => Ok(0),
            Some(_) => {
                let text = self.text(name)?;
                text.parse::<u64>()
                    .map_err(|_| StoreError::corrupt(format!("field `{name}`: `{text}`")))
            }
        }
    }

    fn flag(&self, name: &str) -> Result<bool, StoreError> {
        match self.bytes(name)? {
            b"0" => Ok(false),
            b"1" => Ok(true),
            _ => Err(StoreError::corrupt(format!(
                "field `{name}` is neither 0 nor 1"
            ))),
        }
    }
}

/// What a listing filters on of one key.
struct Brief {
    id: KeyId,
    status: Status,
    description: String,
    last_used: Option<OffsetDateTime>,
}

/// A field of a brief as text.
fn brief_text(bytes: &[u8]) -> Result<&str, StoreError> {
    std::str::from_utf8(bytes).map_err(|_| StoreError::corrupt("field is not UTF-8"))
}

impl Brief {
    /// Reads a brief of `SCAN_KEYS`; one of a key without a hash is corrupt.
    fn decode(row: Vec<Vec<u8>>) -> Result<Brief, StoreError> {
        let raw_id = brief_text(row.first().map_or(&[][..], Vec::as_slice))?;
        let id = raw_id
            .parse::<u64>()
            .ok()
            .and_then(KeyId::new)
            .ok_or_else(|| StoreError::corrupt(format!("key id `{raw_id}` out of range")))?;
        let decode = || -> Result<Brief, StoreError> {
            let [_, status, user, company, description, last_used] = &row[..] else {
                return Err(StoreError::corrupt(format!(
                    "a listing brief of {} fields, not 6",
                    row.len()
                )));
            };
            Ok(Brief {
                id,
                status: Status::effective(
                    parse_status(brief_text(status)?)?,
                    parse_status(brief_text(user)?)?,
                    parse_status(brief_text(company)?)?,
                ),
                description: brief_text(description)?.to_owned(),
                last_used: match brief_text(last_used)? {
                    "" => None,
                    text => Some(parse_date(text)?),
                },
            })
        };
        decode().map_err(|e| in_key(id, e))
    }
}

/// A date as a hash field; `''` for none.
fn optional_date(date: Option<OffsetDateTime>) -> Result<String, StoreError> {
    date.map_or(Ok(String::new()), format_date)
}

fn flag(value: bool) -> &'static str {
    if value {
        "1"
    } else {
        "0"
    }
}

fn hex(digest: &SecretDigest) -> String {
    use std::fmt::Write;
    digest
        .as_bytes()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn decode_key(fields: &Fields) -> Result<KeyRecord, StoreError> {
    let raw_id = fields.text("id")?;
    let id = raw_id
        .parse::<u64>()
        .ok()
        .and_then(KeyId::new)
        .ok_or_else(|| StoreError::corrupt(format!("key id `{raw_id}` out of range")))?;
    let decode = || -> Result<KeyRecord, StoreError> {
        Ok(KeyRecord {
            id,
            digest: parse_digest(fields.bytes("digest")?)?,
            owner: Owner {
                user_uid: fields.string("user_uid")?,
                user_name: fields.string("user_name")?,
                company_id: fields.string("company_id")?,
                company_name: fields.string("company_name")?,
            },
            description: fields.string("description")?,
            read_only: fields.flag("read_only")?,
            scopes: parse_scopes(fields.text("scopes")?)?,
            status: parse_status(fields.text("status")?)?,
            user_status: parse_status(fields.text("user_status")?)?,
            company_status: parse_status(fields.text("company_status")?)?,
            created: parse_date(fields.text("created")?)?,
            // Keys written before the lock existed have no field: unlocked.
            status_locked: fields
                .optional("status_locked")
                .map_or(Ok(false), |_| fields.flag("status_locked"))?,
            // Keys written before these fields existed have none; an empty field is none too.
            expires: fields.optional_date("expires")?,
            deprecated: fields.optional_date("deprecated")?,
            last_used: fields.optional_date("last_used")?,
        })
    };
    decode().map_err(|e| in_key(id, e))
}

fn decode_user(fields: &Fields) -> Result<User, StoreError> {
    let role = fields.text("role")?;
    Ok(User {
        uid: fields.string("uid")?,
        user_name: fields.string("user_name")?,
        password_hash: fields.string("password_hash")?,
        role: Role::parse(role)
            .ok_or_else(|| StoreError::corrupt(format!("unknown role `{role}`")))?,
        company_id: fields.string("company_id")?,
        status: parse_status(fields.text("status")?)?,
        created: parse_date(fields.text("created")?)?,
        profile: fields.profile()?,
        token_generation: fields.generation("token_generation")?,
    })
}

fn decode_company(fields: &Fields) -> Result<Company, StoreError> {
    Ok(Company {
        uid: fields.string("uid")?,
        name: fields.string("name")?,
        status: parse_status(fields.text("status")?)?,
        profile: fields.profile()?,
        token_generation: fields.generation("token_generation")?,
    })
}

fn decode_refresh_token(fields: &Fields) -> Result<RefreshToken, StoreError> {
    Ok(RefreshToken {
        digest: parse_digest(fields.bytes("digest")?)?,
        user_uid: fields.string("user_uid")?,
        read_only: fields.flag("read_only")?,
        expires: parse_date(fields.text("expires")?)?,
        family: fields.string("family")?,
        user_generation: fields.generation("user_generation")?,
        company_generation: fields.generation("company_generation")?,
    })
}

/// The first and last rank of a page, as `ZRANGE` takes them (an empty range when `limit` is 0).
fn ranks(offset: u64, limit: u64) -> (i64, i64) {
    let first = i64::try_from(offset).unwrap_or(i64::MAX);
    if limit == 0 || first == i64::MAX {
        return (1, 0);
    }
    let last = offset.saturating_add(limit - 1);
    (first, i64::try_from(last).unwrap_or(i64::MAX))
}

/// What a listing script answers: whether the indexes are complete (see `keys_state`), then a
/// count or cursor, then rows.
type Listed<T> = (i64, T, Vec<Vec<Vec<u8>>>);

#[async_trait]
impl KeyStore for RedisStore {
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let fields: Option<Vec<Vec<u8>>> = self
            .scripts
            .get
            .prepare_invoke()
            .arg(&*self.prefix)
            .arg(id.get())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        fields.map(|f| decode_key(&Fields::new(f))).transpose()
    }

    async fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
        let created = format_date(record.created)?;
        let inserted: i64 = self
            .scripts
            .insert
            .prepare_invoke()
            .arg(&*self.prefix)
            .arg(record.id.get())
            .arg(&record.owner.user_uid)
            .arg(encode_event(&ChangeEvent::Key(record.id)))
            .arg("digest")
            .arg(&record.digest.as_bytes()[..])
            .arg("user_uid")
            .arg(&record.owner.user_uid)
            .arg("user_name")
            .arg(&record.owner.user_name)
            .arg("company_id")
            .arg(&record.owner.company_id)
            .arg("company_name")
            .arg(&record.owner.company_name)
            .arg("description")
            .arg(&record.description)
            .arg("read_only")
            .arg(flag(record.read_only))
            .arg("scopes")
            .arg(format_scopes(record.scopes))
            .arg("status")
            .arg(record.status.as_str())
            .arg("created")
            .arg(created)
            .arg("status_locked")
            .arg(flag(record.status_locked))
            .arg("expires")
            .arg(optional_date(record.expires)?)
            .arg("deprecated")
            .arg(optional_date(record.deprecated)?)
            .arg("last_used")
            .arg(optional_date(record.last_used)?)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        if inserted == 0 {
            return Err(StoreError::conflict());
        }
        Ok(())
    }

    async fn update(&self, id: KeyId, update: KeyUpdate) -> Result<Option<KeyRecord>, StoreError> {
        // Unlike the SQL stores, a record that cannot be read back has still been changed: Redis
        // has no rollback, and reading it first would leave a window for another write.
        let fields: Option<Vec<Vec<u8>>> = self
            .scripts
            .update
            .prepare_invoke()
            .arg(&*self.prefix)
            .arg(id.get())
            .arg(encode_event(&ChangeEvent::Key(id)))
            .arg(update.status.map_or("", Status::as_str))
            .arg(flag(update.description.is_some()))
            .arg(update.description.as_deref().unwrap_or(""))
            .arg(update.status_locked.map_or("", flag))
            .arg(match update.retire {
                Some((at, _)) => format_date(at)?,
                None => String::new(),
            })
            .arg(match update.retire {
                Some((_, until)) => format_date(until)?,
                None => String::new(),
            })
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        fields.map(|f| decode_key(&Fields::new(f))).transpose()
    }

    async fn record_use(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        // Batches keep each script short, so other clients are not held up behind one.
        for batch in uses.chunks(SCAN_BATCH) {
            let mut call = self.scripts.record_use.prepare_invoke();
            call.arg(&*self.prefix);
            for &(id, at) in batch {
                call.arg(id.get()).arg(format_date(at)?);
            }
            let _: i64 = call
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(StoreError::backend)?;
        }
        Ok(())
    }

    async fn delete(&self, id: KeyId) -> Result<bool, StoreError> {
        let deleted: i64 = self
            .scripts
            .delete
            .prepare_invoke()
            .arg(&*self.prefix)
            .arg(id.get())
            .arg(encode_event(&ChangeEvent::KeyDeleted(id)))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        Ok(deleted == 1)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
        if let Some(uid) = &query.user_uid {
            // One user's keys: few (the management API caps them), read together and paged here.
            let rows: Vec<Vec<Vec<u8>>> = self
                .scripts
                .list_user_keys
                .prepare_invoke()
                .arg(&*self.prefix)
                .arg(uid)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(StoreError::backend)?;
            let records = rows
                .into_iter()
                .map(|row| decode_key(&Fields::new(row)))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(query.apply(records));
        }
        let index = match query.sort {
            SortField::Id | SortField::Status => "id",
            SortField::CreationDate => "created",
            SortField::Description => "description",
            SortField::UserName => "user-name",
        };
        let filtered = query.status.is_some()
            || query.description_contains.is_some()
            || query.unused_since.is_some();
        if filtered || query.sort == SortField::Status {
            self.scanned_keys(index, query).await
        } else {
            self.indexed_keys(index, query).await
        }
    }

    async fn set_user_status(&self, user_uid: &str, status: Status) -> Result<(), StoreError> {
        let event = ChangeEvent::User {
            user_uid: user_uid.to_owned(),
            status,
        };
        self.set_owner_status("user", user_uid, event, status).await
    }

    async fn set_company_status(&self, company_id: &str, status: Status) -> Result<(), StoreError> {
        let event = ChangeEvent::Company {
            company_id: company_id.to_owned(),
            status,
        };
        self.set_owner_status("company", company_id, event, status)
            .await
    }

    /// Listens on a connection of its own; see [`RedisStore`]. Panics outside a tokio runtime.
    fn subscribe(&self) -> Option<ChangeStream> {
        let notifier = RedisNotifier {
            client: self.client.clone(),
            conn: self.conn.clone(),
            channel: self.channel(),
        };
        Some(notify::subscribe(notifier, Timing::DEFAULT))
    }
}

#[async_trait]
impl AccountStore for RedisStore {
    async fn create_company(&self, company: Company) -> Result<(), StoreError> {
        let event = ChangeEvent::Company {
            company_id: company.uid.clone(),
            status: company.status,
        };
        self.create_account(
            "company",
            &company.uid,
            &company.name,
            company.status,
            &event,
            &[
                ("uid", &company.uid),
                ("name", &company.name),
                ("profile", &format_profile(&company.profile)?),
                ("token_generation", &company.token_generation.to_string()),
            ],
        )
        .await
    }

    async fn company(&self, uid: &str) -> Result<Option<Company>, StoreError> {
        let rows = self.accounts("company", "id", uid).await?;
        rows.first().map(decode_company).transpose()
    }

    async fn list_companies(&self, offset: u64, limit: u64) -> Result<Page<Company>, StoreError> {
        let (total, rows) = self
            .page_accounts("company", "company-by-name", offset, limit)
            .await?;
        Ok(Page {
            items: rows.iter().map(decode_company).collect::<Result<_, _>>()?,
            total,
        })
    }

    async fn update_company_profile(
        &self,
        uid: &str,
        profile: CompanyProfile,
    ) -> Result<Option<Company>, StoreError> {
        self.set_profile("company", uid, &format_profile(&profile)?)
            .await?
            .as_ref()
            .map(decode_company)
            .transpose()
    }

    async fn create_user(&self, user: User) -> Result<(), StoreError> {
        let event = ChangeEvent::User {
            user_uid: user.uid.clone(),
            status: user.status,
        };
        let created = format_date(user.created)?;
        self.create_account(
            "user",
            &user.uid,
            &user.user_name,
            user.status,
            &event,
            &[
                ("uid", &user.uid),
                ("user_name", &user.user_name),
                ("password_hash", &user.password_hash),
                ("role", user.role.as_str()),
                ("company_id", &user.company_id),
                ("created", &created),
                ("profile", &format_profile(&user.profile)?),
                ("token_generation", &user.token_generation.to_string()),
            ],
        )
        .await
    }

    async fn user(&self, uid: &str) -> Result<Option<User>, StoreError> {
        let rows = self.accounts("user", "id", uid).await?;
        rows.first().map(decode_user).transpose()
    }

    async fn user_by_name(&self, user_name: &str) -> Result<Option<User>, StoreError> {
        let rows = self.accounts("user", "name", user_name).await?;
        rows.first().map(decode_user).transpose()
    }

    async fn list_users(
        &self,
        company_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<User>, StoreError> {
        let index = match company_id {
            Some(id) => format!("company-users:{id}"),
            None => "user-by-name".to_owned(),
        };
        let (total, rows) = self.page_accounts("user", &index, offset, limit).await?;
        Ok(Page {
            items: rows.iter().map(decode_user).collect::<Result<_, _>>()?,
            total,
        })
    }

    async fn update_user_profile(
        &self,
        uid: &str,
        profile: UserProfile,
    ) -> Result<Option<User>, StoreError> {
        self.set_profile("user", uid, &format_profile(&profile)?)
            .await?
            .as_ref()
            .map(decode_user)
            .transpose()
    }

    async fn put_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError> {
        let expires_ms = token.expires.unix_timestamp_nanos() / 1_000_000;
        let _: i64 = self
            .scripts
            .put_refresh_token
            .prepare_invoke()
            .arg(&*self.prefix)
            .arg(hex(&token.digest))
            .arg(i64::try_from(expires_ms).unwrap_or(i64::MAX))
            .arg(&token.user_uid)
            .arg(&token.family)
            .arg("digest")
            .arg(&token.digest.as_bytes()[..])
            .arg("user_uid")
            .arg(&token.user_uid)
            .arg("read_only")
            .arg(flag(token.read_only))
            .arg("expires")
            .arg(format_date(token.expires)?)
            .arg("family")
            .arg(&token.family)
            .arg("user_generation")
            .arg(token.user_generation)
            .arg("company_generation")
            .arg(token.company_generation)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn take_refresh_token(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<RefreshUse>, StoreError> {
        // Read and marked used in one script, so two requests cannot both see it unused.
        let fields: Option<Vec<Vec<u8>>> = self
            .scripts
            .take_refresh_token
            .prepare_invoke()
            .arg(&*self.prefix)
            .arg(hex(digest))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        let Some(fields) = fields.map(Fields::new) else {
            return Ok(None);
        };
        let token = decode_refresh_token(&fields)?;
        // Tokens stored before they were marked used had no mark, nor an expiry of their hash.
        let used = match fields.optional("used") {
            Some(_) => fields.flag("used")?,
            None => {
                let expires_ms = token.expires.unix_timestamp_nanos() / 1_000_000;
                let _: i64 = redis::cmd("PEXPIREAT")
                    .arg(format!("{}refresh:{}", self.prefix, hex(digest)))
                    .arg(i64::try_from(expires_ms).unwrap_or(i64::MAX))
                    .query_async(&mut self.conn.clone())
                    .await
                    .map_err(StoreError::backend)?;
                false
            }
        };
        Ok(Some(if used {
            RefreshUse::Replayed(token)
        } else {
            RefreshUse::Fresh(token)
        }))
    }

    async fn revoke_refresh_family(&self, family: &str) -> Result<u64, StoreError> {
        let revoked: i64 = self
            .scripts
            .revoke_refresh_family
            .prepare_invoke()
            .arg(&*self.prefix)
            .arg(family)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        Ok(u64::try_from(revoked).unwrap_or(0))
    }

    async fn revoke_user_tokens(&self, user_uid: &str) -> Result<Option<u64>, StoreError> {
        self.revoke_tokens("user", user_uid).await
    }

    async fn revoke_company_tokens(&self, company_id: &str) -> Result<Option<u64>, StoreError> {
        self.revoke_tokens("company", company_id).await
    }
}

/// The store's change channel: `SUBSCRIBE` on a connection of its own, `PUBLISH` through the
/// store's connection.
struct RedisNotifier {
    client: Client,
    conn: ConnectionManager,
    channel: String,
}

#[async_trait]
impl Notifier for RedisNotifier {
    async fn listen(&self) -> Result<Subscription, StoreError> {
        let mut pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(StoreError::backend)?;
        pubsub
            .subscribe(&self.channel)
            .await
            .map_err(StoreError::backend)?;
        let mut messages = pubsub.into_on_message();
        let (tx, payloads) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            // The stream ends when the connection is lost.
            while let Some(message) = poll_fn(|cx| Pin::new(&mut messages).poll_next(cx)).await {
                // A payload that is not UTF-8 is no event this store sent: resync.
                let payload = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
                if tx.send(payload).is_err() {
                    return;
                }
            }
        });
        Ok(Subscription {
            payloads,
            reader: reader.abort_handle(),
        })
    }

    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(payload)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_become_zrange_ranks_and_never_wrap() {
        assert_eq!(ranks(0, 10), (0, 9));
        assert_eq!(ranks(5, 1), (5, 5));
        // An empty range, not ZRANGE's "0 -1" (everything).
        assert_eq!(ranks(3, 0), (1, 0));
        assert_eq!(ranks(0, u64::MAX), (0, i64::MAX));
        assert_eq!(ranks(u64::MAX, 5), (1, 0));
        let near = i64::MAX as u64 - 1;
        assert_eq!(ranks(near, 5), (i64::MAX - 1, i64::MAX));
    }

    #[test]
    fn briefs_carry_the_effective_status_or_are_corrupt() {
        let row = |fields: &[&[u8]]| fields.iter().map(|f| f.to_vec()).collect::<Vec<_>>();
        let brief = Brief::decode(row(&[
            b"7",
            b"enabled",
            b"disabled",
            b"enabled",
            b"CI",
            b"",
        ]))
        .expect("decodes");
        assert_eq!(brief.id.get(), 7);
        assert_eq!(brief.status, Status::DisabledDueToUser);
        assert_eq!(brief.description, "CI");
        assert_eq!(brief.last_used, None);
        let used = Brief::decode(row(&[
            b"7",
            b"enabled",
            b"enabled",
            b"enabled",
            b"",
            b"2025-03-01T10:00:00.000000000Z",
        ]))
        .expect("decodes");
        assert_eq!(
            used.last_used,
            Some(time::macros::datetime!(2025-03-01 10:00 UTC))
        );
        for bad in [
            row(&[b"7"]),
            row(&[b"7", b"enabled", b"enabled", b"enabled", b""]),
            row(&[b"7", b"bogus", b"enabled", b"enabled", b"", b""]),
            row(&[b"7", b"enabled", b"enabled", b"enabled", b"\xff", b""]),
            row(&[b"7", b"enabled", b"enabled", b"enabled", b"", b"yesterday"]),
        ] {
            let err = Brief::decode(bad).err().expect("corrupt");
            assert!(
                err.is_corrupt() && err.to_string().contains("key 7"),
                "{err}"
            );
        }
        assert!(
            Brief::decode(row(&[b"0", b"enabled", b"enabled", b"enabled", b"", b""]))
                .err()
                .expect("corrupt")
                .is_corrupt()
        );
    }
}
