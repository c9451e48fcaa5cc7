//! Passwords: Argon2id hashes in PHC string form, computed by a fixed pool of worker threads.
//!
//! Each Argon2id hash fills 19 MiB. Hashing on `spawn_blocking` let a flood of logins run up to
//! 512 hashes at once, each allocating its own memory in its own malloc arena: gigabytes resident,
//! and a real login waiting behind every bogus one. Here one worker per core (at most
//! [`MAX_WORKERS`]) takes jobs from one queue and hashes into a block buffer it allocated once, so
//! memory stays at workers × 19 MiB whatever the load. Logins are admitted to the queue through a
//! [`LoginQueue`]: a bounded number of them wait or run, each with a deadline after which a worker
//! skips it unhashed; anything beyond answers "busy" at once.

use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use zeroize::Zeroizing;

/// Shortest password accepted.
pub(crate) const MIN_LEN: usize = 8;
/// Longest password accepted, in bytes (hashing cost does not depend on it, but bodies should stay small).
pub(crate) const MAX_LEN: usize = 1024;

/// Most hashing threads, whatever the core count: each keeps 19 MiB of Argon2 memory.
pub(crate) const MAX_WORKERS: usize = 16;
/// Jobs the pool's queue holds beyond the workers, all callers together: a last bound behind the
/// per-router [`LoginQueue`]s, for the hashes of new users, which wait rather than fail.
const BACKLOG: usize = 1024;
/// Largest Argon2 memory a stored hash may ask for, in KiB; beyond it the hash is not computed.
const MAX_M_COST: u32 = 256 * 1024;
/// Salt of new hashes, in bytes.
const SALT_LEN: usize = 16;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a password could not be hashed or checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HashError {
    /// Too short or too long.
    Policy,
    /// Not computed: the queue was full, or the job's deadline passed before its answer came.
    Busy,
    /// The random number generator or the hasher failed.
    Internal,
}

/// Checks the length rules.
pub(crate) fn check_policy(password: &str) -> Result<(), HashError> {
    if password.chars().count() < MIN_LEN || password.len() > MAX_LEN {
        return Err(HashError::Policy);
    }
    Ok(())
}

/// Hashes `password` with Argon2id (the `argon2` crate's default parameters) and a fresh 16-byte
/// salt, on the pool. It waits its turn without a deadline (only administrators create users);
/// `Busy` only when the pool's whole backlog is full.
pub(crate) async fn hash(password: Zeroizing<String>) -> Result<String, HashError> {
    check_policy(&password)?;
    let (reply, answer) = oneshot::channel();
    pool().ok_or(HashError::Internal)?.submit(Job {
        work: Work::Hash(password),
        deadline: None,
        reply,
        permit: None,
        dispatch: tracing::dispatcher::get_default(Clone::clone),
    })?;
    match answer.await {
        Ok(Outcome::Hashed(result)) => result,
        _ => Err(HashError::Internal),
    }
}

/// Whether `password` matches `stored` (a PHC string), checked on the pool within `admission`'s
/// deadline. With no stored hash (unknown user) a dummy hash with the same parameters is computed
/// instead, so unknown user and wrong password cost the same. `Err(Busy)`: the pool's backlog
/// was full, or the check did not finish before the deadline (the worker then skips it).
pub(crate) async fn verify(
    password: Zeroizing<String>,
    stored: Option<String>,
    admission: Admission,
) -> Result<bool, HashError> {
    let (reply, answer) = oneshot::channel();
    let Some(pool) = pool() else {
        return Err(HashError::Internal);
    };
    pool.submit(Job {
        work: Work::Verify { password, stored },
        deadline: Some(admission.deadline),
        reply,
        // Held by the job, not by this future: a client that hangs up does not free its place
        // while its hash is still queued.
        permit: Some(admission.permit),
        dispatch: tracing::dispatcher::get_default(Clone::clone),
    })?;
    match tokio::time::timeout_at(admission.deadline, answer).await {
        Ok(Ok(Outcome::Verified(matches))) => Ok(matches),
        Ok(Ok(Outcome::Hashed(_))) => Err(HashError::Internal),
        // Skipped by a worker that found the deadline passed, or the caller's own timer fired.
        Ok(Err(_)) | Err(_) => Err(HashError::Busy),
    }
}

/// How many logins of one router may wait for or run on the pool, and for how long.
#[derive(Debug)]
pub(crate) struct LoginQueue {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

/// A login's place on the pool: taken before the store is asked, handed to [`verify`].
#[derive(Debug)]
pub(crate) struct Admission {
    permit: OwnedSemaphorePermit,
    deadline: Instant,
}

impl LoginQueue {
    /// At most `len` logins waiting or hashing at once (at least one), each given `timeout` from
    /// admission to answer.
    pub(crate) fn new(len: usize, timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(len.clamp(1, Semaphore::MAX_PERMITS))),
            timeout,
        }
    }

    /// A place for one login, or `Busy` at once when all are taken.
    pub(crate) fn admit(&self) -> Result<Admission, HashError> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        Ok(Admission {
            permit,
            deadline: Instant::now() + self.timeout,
        })
    }
}

/// How many hashing threads the pool runs: one per core, at most [`MAX_WORKERS`].
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_WORKERS)
}

/// The process's hashing pool, started on first use; `None` if no thread could be started.
fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(Pool::start).as_ref()
}

struct Pool {
    jobs: SyncSender<Job>,
}

struct Job {
    work: Work,
    deadline: Option<Instant>,
    reply: oneshot::Sender<Outcome>,
    /// The login's place in its router's queue, given back when the job is done or skipped.
    permit: Option<OwnedSemaphorePermit>,
    /// The caller's subscriber: the worker's events land where the request's do.
    dispatch: tracing::Dispatch,
}

enum Work {
    Hash(Zeroizing<String>),
    Verify {
        password: Zeroizing<String>,
        stored: Option<String>,
    },
}

enum Outcome {
    Hashed(Result<String, HashError>),
    Verified(bool),
}

impl Pool {
    fn start() -> Option<Self> {
        let (jobs, queue) = mpsc::sync_channel(BACKLOG);
        let queue = Arc::new(Mutex::new(queue));
        let mut started = 0;
        for n in 0..workers() {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || work(&queue));
            if spawned.is_ok() {
                started += 1;
            }
        }
        (started > 0).then_some(Self { jobs })
    }

    fn submit(&self, job: Job) -> Result<(), HashError> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => HashError::Busy,
            TrySendError::Disconnected(_) => HashError::Internal,
        })
    }
}

/// One worker: takes jobs until the process ends, hashing into one buffer it keeps.
fn work(queue: &Mutex<Receiver<Job>>) {
    let mut memory = Memory::default();
    loop {
        // The lock is held while waiting only; the hash runs with it released.
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        let dispatch = job.dispatch.clone();
        let run = || run(&mut memory, job);
        tracing::dispatcher::with_default(&dispatch, run);
    }
}

/// Runs one job, or skips it when its caller's deadline passed or the caller is gone.
fn run(memory: &mut Memory, job: Job) {
    if job.deadline.is_some_and(|d| Instant::now() >= d) || job.reply.is_closed() {
        tracing::debug!("password check skipped: its deadline passed before a worker was free");
        return;
    }
    // A panic in the hasher costs this job, not the worker.
    let outcome = catch_unwind(AssertUnwindSafe(|| match &job.work {
        Work::Hash(password) => Outcome::Hashed(memory.hash(password.as_bytes())),
        Work::Verify { password, stored } => {
            Outcome::Verified(memory.verify(password.as_bytes(), stored.as_deref()))
        }
    }));
    let outcome = outcome.unwrap_or_else(|_| {
        *memory = Memory::default();
        match &job.work {
            Work::Hash(_) => Outcome::Hashed(Err(HashError::Internal)),
            Work::Verify { .. } => Outcome::Verified(false),
        }
    });
    drop(job.permit);
    let _ = job.reply.send(outcome);
}

/// A worker's Argon2 memory, allocated on its first hash and reused by every later one.
#[derive(Default)]
struct Memory {
    blocks: Vec<Block>,
}

impl Memory {
    /// The first `count` blocks, growing the buffer when a stored hash asks for more than it has.
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.blocks.len() < count {
            self.blocks.resize(count, Block::default());
        }
        &mut self.blocks[..count]
    }

    /// Computes Argon2 of `password` and `salt` into `out`, then wipes the blocks it used.
    fn compute(
        &mut self,
        argon2: &Argon2<'_>,
        params: &Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> bool {
        let count = params.block_count();
        let blocks = self.blocks(count);
        let done = argon2
            .hash_password_into_with_memory(password, salt, out, &mut *blocks)
            .is_ok();
        tracing::trace!(m_cost = params.m_cost(), "password hash computed");
        // The buffer outlives the job: leave nothing derived from this password in it.
        blocks.fill(Block::default());
        // A buffer grown for an unusual stored hash is not kept at that size.
        if self.blocks.len() > Params::DEFAULT.block_count() {
            self.blocks = Vec::new();
        }
        done
    }

    fn hash(&mut self, password: &[u8]) -> Result<String, HashError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|_| HashError::Internal)?;
        let params = Params::DEFAULT;
        let mut out = Zeroizing::new([0u8; Params::DEFAULT_OUTPUT_LEN]);
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        if !self.compute(&argon2, &params, password, &salt, out.as_mut()) {
            return Err(HashError::Internal);
        }
        phc(&params, &salt, out.as_ref())
    }

    /// Whether `password` matches `stored`; `None` checks a dummy hash and is never a match.
    fn verify(&mut self, password: &[u8], stored: Option<&str>) -> bool {
        let (phc, known) = match stored {
            Some(s) => (s, true),
            None => (dummy_hash(), false),
        };
        let Some(stored) = Stored::parse(phc) else {
            tracing::warn!("stored password hash is not an Argon2 PHC string this server checks");
            return false;
        };
        let mut out = Zeroizing::new([0u8; Output::MAX_LENGTH]);
        let out = &mut out[..stored.output.len()];
        let argon2 = Argon2::new(stored.algorithm, stored.version, stored.params.clone());
        if !self.compute(&argon2, &stored.params, password, stored.salt(), out) {
            return false;
        }
        let matches: bool = out.ct_eq(stored.output.as_bytes()).into();
        matches && known
    }
}

/// A stored PHC string, parsed for recomputing.
struct Stored {
    algorithm: Algorithm,
    version: Version,
    params: Params,
    salt: [u8; 64],
    salt_len: usize,
    output: Output,
}

impl Stored {
    fn parse(phc: &str) -> Option<Self> {
        let parsed = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).ok()?;
        if params.m_cost() > MAX_M_COST {
            return None;
        }
        let mut salt = [0u8; 64];
        let salt_len = parsed.salt?.decode_b64(&mut salt).ok()?.len();
        Some(Self {
            algorithm,
            version,
            params,
            salt,
            salt_len,
            output: parsed.hash?,
        })
    }

    fn salt(&self) -> &[u8] {
        &self.salt[..self.salt_len]
    }
}

/// The PHC string of an Argon2id hash.
fn phc(params: &Params, salt: &[u8], output: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::encode_b64(salt).map_err(|_| HashError::Internal)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|_| HashError::Internal)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(output).map_err(|_| HashError::Internal)?),
    };
    Ok(hash.to_string())
}

/// A PHC string with the parameters of real hashes, a random salt and a random output: checking a
/// password against it costs one full hash and never matches. Nothing needs to be hashed to make it.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut random = [0u8; SALT_LEN + Params::DEFAULT_OUTPUT_LEN];
        // Without randomness the fixed bytes are as good: the dummy only has to cost a hash.
        let _ = getrandom::fill(&mut random);
        let (salt, output) = random.split_at(SALT_LEN);
        phc(&Params::DEFAULT, salt, output).unwrap_or_default()
    })
}

/// A random password of 24 characters of `[0-9A-Za-z]` (about 143 bits).
pub(crate) fn generate() -> Result<Zeroizing<String>, HashError> {
    let mut out = Zeroizing::new(String::with_capacity(24));
    let mut buf = Zeroizing::new([0u8; 64]);
    while out.len() < 24 {
        getrandom::fill(buf.as_mut()).map_err(|_| HashError::Internal)?;
        // 248 = 4 × 62: rejecting the top bytes keeps every character equally likely.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == 24 {
                break;
            }
            out.push(char::from(BASE62[usize::from(b % 62)]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    fn queue() -> LoginQueue {
        LoginQueue::new(8, Duration::from_secs(30))
    }

    async fn check(password: &str, stored: Option<String>) -> bool {
        let admission = queue().admit().expect("a place");
        verify(Zeroizing::new(password.into()), stored, admission)
            .await
            .expect("not busy")
    }

    #[tokio::test]
    async fn hash_verifies_and_wrong_password_does_not() {
        let phc = hash(Zeroizing::new("correct horse".into()))
            .await
            .expect("hashed");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(check("correct horse", Some(phc.clone())).await);
        assert!(!check("correct horsE", Some(phc)).await);
        assert!(!check("correct horse", None).await);
        assert!(!check("x", Some("garbage".into())).await);
    }

    #[tokio::test]
    async fn hashes_agree_with_the_argon2_crate_both_ways() {
        let ours = hash(Zeroizing::new("correct horse".into()))
            .await
            .expect("hashed");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        // Theirs, with other parameters too: the worker grows its buffer and checks them.
        let salt = SaltString::encode_b64(b"sixteen byte slt").expect("salt");
        for params in [
            Params::DEFAULT,
            Params::new(2 * 19456, 1, 2, Some(24)).expect("params"),
        ] {
            let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(b"battery staple", &salt)
                .expect("hashed")
                .to_string();
            assert!(check("battery staple", Some(theirs.clone())).await);
            assert!(!check("battery stapler", Some(theirs)).await);
        }
    }

    #[tokio::test]
    async fn the_dummy_hash_has_the_parameters_of_real_ones() {
        let real = hash(Zeroizing::new("correct horse".into()))
            .await
            .expect("hashed");
        let prefix = |s: &str| s.rsplitn(3, '$').nth(2).map(str::to_owned);
        assert_eq!(prefix(dummy_hash()), prefix(&real));
        assert!(Stored::parse(dummy_hash()).is_some());
    }

    #[tokio::test]
    async fn a_full_queue_admits_nobody_until_a_place_is_free() {
        let queue = LoginQueue::new(1, Duration::from_secs(30));
        let first = queue.admit().expect("a place");
        assert_eq!(queue.admit().map(drop), Err(HashError::Busy));
        drop(first);
        assert!(queue.admit().is_ok());
    }

    #[tokio::test]
    async fn a_check_past_its_deadline_is_busy_and_skipped() {
        let queue = LoginQueue::new(4, Duration::ZERO);
        let admission = queue.admit().expect("a place");
        let answer = verify(Zeroizing::new("correct horse".into()), None, admission).await;
        assert_eq!(answer, Err(HashError::Busy));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_beyond_the_queue_is_busy_at_once_and_the_queue_still_serves() {
        let queue = LoginQueue::new(workers() * 8, Duration::from_secs(30));
        // Far more jobs than threads and queue: the excess is refused without running.
        let jobs: Vec<_> = (0..workers() * 8 * 4)
            .map(|_| {
                let admission = queue.admit();
                tokio::spawn(async move {
                    verify(Zeroizing::new("wrong password".into()), None, admission?).await
                })
            })
            .collect();
        let mut busy = 0;
        let mut ran = 0;
        for job in jobs {
            match job.await.expect("joined") {
                Ok(matches) => {
                    assert!(!matches);
                    ran += 1;
                }
                Err(HashError::Busy) => busy += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(
            busy,
            workers() * 8 * 3,
            "only the queue's places were taken"
        );
        assert_eq!(ran, workers() * 8);
        // Once the flood is over, work is taken again.
        assert!(!check("correct horse", None).await);
    }

    #[tokio::test]
    async fn short_passwords_are_refused() {
        assert!(matches!(
            hash(Zeroizing::new("short".into())).await,
            Err(HashError::Policy)
        ));
    }

    #[test]
    fn generated_passwords_are_alphanumeric_and_differ() {
        let a = generate().expect("rng");
        let b = generate().expect("rng");
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(*a, *b);
    }
}
