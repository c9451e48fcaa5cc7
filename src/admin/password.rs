//! Passwords: Argon2id hashes in PHC string form, computed by a fixed pool of threads.
//!
//! Each hash takes tens of milliseconds of CPU and 19 MiB of memory on purpose. Run one per request
//! on the blocking pool and a flood of logins takes hundreds of threads and gigabytes (each thread's
//! allocator keeps its own arena); so hashing runs on one thread per core, fed by a short queue. A
//! full queue, or a job that waited too long, is [`HashError::Busy`] at once: the caller answers
//! 503 with `Retry-After`, and a valid login queued behind a flood still answers quickly.

use std::cell::RefCell;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Shortest password accepted.
pub(crate) const MIN_LEN: usize = 8;
/// Longest password accepted, in bytes (hashing cost does not depend on it, but bodies should stay small).
pub(crate) const MAX_LEN: usize = 1024;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Jobs that may wait for a hashing thread, per thread.
const QUEUE_PER_WORKER: usize = 8;

/// Longest a job waits for a hashing thread before it is given up.
const MAX_WAIT: Duration = Duration::from_secs(2);

/// Why a password could not be hashed or checked.
#[derive(Debug)]
pub(crate) enum HashError {
    /// Too short or too long.
    Policy,
    /// Every hashing thread is taken and the queue is full, or the job waited too long.
    Busy,
    /// The random number generator or the hasher failed.
    Internal,
}

type Work = Box<dyn FnOnce() + Send>;

/// A job and the moment it is no longer worth running.
struct Job {
    work: Work,
    deadline: Instant,
    /// Told when the deadline passed before the job ran.
    expired: Box<dyn FnOnce() + Send>,
}

/// The hashing threads and the queue in front of them.
struct Pool {
    queue: SyncSender<Job>,
}

impl Pool {
    fn start() -> Self {
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let (queue, jobs) = mpsc::sync_channel::<Job>(workers * QUEUE_PER_WORKER);
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..workers {
            let jobs = jobs.clone();
            // A pool that cannot start a thread has fewer; with none, every job waits out its
            // deadline in the queue and the caller is told `Busy`.
            let _ = std::thread::Builder::new()
                .name(format!("tower-api-key-argon2-{n}"))
                .spawn(move || work(&jobs));
        }
        Self { queue }
    }

    fn get() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(Pool::start)
    }

    /// Runs `f` on a hashing thread: `Busy` when the queue is full or the job waited too long.
    async fn run<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (tx, rx) = tokio::sync::oneshot::channel::<Option<T>>();
        // Whichever of the job and its expiry runs answers; the other finds the sender gone.
        let done = Arc::new(Mutex::new(Some(tx)));
        let reply = move |value: Option<T>| {
            if let Some(tx) = done.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = tx.send(value);
            }
        };
        let reply_expired = reply.clone();
        let job = Job {
            work: Box::new(move || reply(Some(f()))),
            deadline: Instant::now() + MAX_WAIT,
            expired: Box::new(move || reply_expired(None)),
        };
        match Pool::get().queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HashError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(HashError::Internal),
        }
        match rx.await {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(HashError::Busy),
            Err(_) => Err(HashError::Internal),
        }
    }
}

/// A hashing thread: takes jobs until the queue is gone.
fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        if Instant::now() > job.deadline {
            (job.expired)();
        } else {
            (job.work)();
        }
    }
}

/// Checks the length rules.
pub(crate) fn check_policy(password: &str) -> Result<(), HashError> {
    if password.chars().count() < MIN_LEN || password.len() > MAX_LEN {
        return Err(HashError::Policy);
    }
    Ok(())
}

/// Hashes `password` with Argon2id and a fresh 16-byte salt.
pub(crate) async fn hash(password: Zeroizing<String>) -> Result<String, HashError> {
    check_policy(&password)?;
    Pool::run(move || hash_blocking(&password)).await?
}

fn hash_blocking(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| HashError::Internal)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| HashError::Internal)?;
    let argon = Argon2::default();
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|_| HashError::Internal)?;
    let mut out = Zeroizing::new([0u8; Params::DEFAULT_OUTPUT_LEN]);
    with_memory(&argon, |blocks| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut *out, blocks)
    })
    .map_err(|_| HashError::Internal)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon.params()).map_err(|_| HashError::Internal)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&*out).map_err(|_| HashError::Internal)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` hashes to `phc`'s output under its parameters; the outputs are compared in
/// constant time.
fn matches(password: &str, phc: &PasswordHash<'_>) -> Result<bool, argon2::password_hash::Error> {
    use argon2::password_hash::Error;
    let params = Params::try_from(phc)?;
    let algorithm = Algorithm::try_from(phc.algorithm)?;
    let version = phc
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|_| Error::Version)?
        .unwrap_or_default();
    let expected = phc.hash.ok_or(Error::Password)?;
    let mut salt = [0u8; 64];
    let salt = phc.salt.ok_or(Error::Password)?.decode_b64(&mut salt)?;
    let argon = Argon2::new(algorithm, version, params);
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    with_memory(&argon, |blocks| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, blocks)
    })
    .map_err(Error::from)?;
    Ok(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
}

/// Runs `f` with this thread's Argon2 memory, grown to what `argon` needs: each hashing thread
/// allocates its memory once, however many passwords it checks.
fn with_memory<T>(argon: &Argon2<'_>, f: impl FnOnce(&mut [Block]) -> T) -> T {
    thread_local! {
        static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
    }
    MEMORY.with_borrow_mut(|memory| {
        let needed = argon.params().block_count();
        if memory.len() < needed {
            memory.resize(needed, Block::default());
        }
        let blocks = &mut memory[..needed];
        let result = f(blocks);
        // What was derived from the password does not stay behind in memory.
        blocks.iter_mut().for_each(|b| *b = Block::default());
        result
    })
}

/// Whether `password` matches `stored` (a PHC string). With no stored hash (unknown user) a
/// dummy hash is checked instead, so unknown user and wrong password take the same time. `Busy`
/// when no hashing thread could take it in time.
pub(crate) async fn verify(
    password: Zeroizing<String>,
    stored: Option<String>,
) -> Result<bool, HashError> {
    Pool::run(move || {
        let dummy;
        let (phc, known) = match &stored {
            Some(s) => (s.as_str(), true),
            None => {
                dummy = dummy_hash();
                (dummy, false)
            }
        };
        let checked = PasswordHash::new(phc).and_then(|parsed| matches(&password, &parsed));
        match checked {
            Ok(matches) => matches && known,
            Err(_) => {
                #[cfg(feature = "tracing")]
                tracing::warn!("stored password hash is not a usable Argon2 PHC string");
                false
            }
        }
    })
    .await
}

/// A hash of a random password made with the same parameters as real ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = generate().unwrap_or_else(|_| Zeroizing::new("unusable-dummy".to_owned()));
        // If hashing failed, the empty string does not parse and every unknown user fails fast;
        // a failing hasher fails real users too, so nothing is learned from the timing.
        hash_blocking(&random).unwrap_or_default()
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
    use super::*;

    #[tokio::test]
    async fn hash_verifies_and_wrong_password_does_not() {
        let phc = hash(Zeroizing::new("correct horse".into()))
            .await
            .expect("hashed");
        assert!(phc.starts_with("$argon2id$"));
        let check = |p: &str, stored: Option<String>| verify(Zeroizing::new(p.into()), stored);
        assert!(check("correct horse", Some(phc.clone()))
            .await
            .expect("ran"));
        assert!(!check("correct horsE", Some(phc)).await.expect("ran"));
        assert!(!check("correct horse", None).await.expect("ran"));
        assert!(!check("x", Some("garbage".into())).await.expect("ran"));
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_phc_strings() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Stored by earlier versions, which hashed with the crate's own `hash_password`.
        let salt = SaltString::encode_b64(&[7u8; 16]).expect("salt");
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .expect("hashed")
            .to_string();
        let parsed = PasswordHash::new(&theirs).expect("phc");
        assert_eq!(matches("correct horse", &parsed), Ok(true));
        assert_eq!(matches("correct horsE", &parsed), Ok(false));
        let ours = hash_blocking("correct horse").expect("hashed");
        assert!(Argon2::default()
            .verify_password(b"correct horse", &PasswordHash::new(&ours).expect("phc"))
            .is_ok());
    }

    #[tokio::test]
    async fn short_passwords_are_refused() {
        assert!(matches!(
            hash(Zeroizing::new("short".into())).await,
            Err(HashError::Policy)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_beyond_the_queue_is_busy_at_once_and_the_queue_still_serves() {
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        // Far more jobs than threads and queue: the excess is refused without running.
        let jobs: Vec<_> = (0..workers * QUEUE_PER_WORKER * 4)
            .map(|_| tokio::spawn(verify(Zeroizing::new("wrong password".into()), None)))
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
        assert!(busy > 0, "nothing was refused");
        assert!(ran >= workers, "the pool ran {ran} jobs");
        // Once the flood is over, work is taken again.
        let phc = hash(Zeroizing::new("correct horse".into()))
            .await
            .expect("hashed");
        assert!(verify(Zeroizing::new("correct horse".into()), Some(phc))
            .await
            .expect("ran"));
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
