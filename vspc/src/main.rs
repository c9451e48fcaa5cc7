//! The management API as a server: `cargo run -p tower-api-key-vspc`.
//!
//! Listens on `127.0.0.1:1280` with the SQLite file `tower-api-key.db` in the working directory. On
//! the first start it creates the user `admin` and, unless a password is given, prints a generated
//! one once.
//!
//! ```text
//! --listen ADDR          address to listen on (default 127.0.0.1:1280)
//! --database URL         sqlite:PATH, sqlite::memory:, postgres://… or redis://…
//!                        (default sqlite:tower-api-key.db)
//! --admin-password PW    password for a newly created admin (also env ADMIN_PASSWORD)
//! --max-key-days N       longest API key lifetime in days (default: none)
//! --rate-limit N         requests per minute for each key or user (default: none)
//! --last-used-interval S seconds between writes of keys' lastUsedDate (default 60)
//! ```
//!
//! `GET /metrics` answers Prometheus text without authentication (see SECURITY.md). Each request
//! runs in a `request` span with `method`, `path`, `key_id` and `reason`.
//!
//! `JWT_SECRET` (environment) signs access tokens; without it a secret is generated for each start,
//! so access tokens do not survive a restart (API keys and refresh tokens do).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tower_api_key::store::AccountStore;
use tower_api_key::{KeyRing, KeyStore, PostgresStore, RateLimit, RedisStore, SqliteStore};
use tower_api_key_vspc::{
    bootstrap_admin, install_recorder, run_upkeep, trace_layer, Admin, ADMIN_USER_NAME,
};
use tracing_subscriber::EnvFilter;
use zeroize::Zeroizing;

const DEFAULT_LISTEN: &str = "127.0.0.1:1280";
const DEFAULT_DATABASE: &str = "sqlite:tower-api-key.db";
const MIN_SECRET_LEN: usize = 32;

const USAGE: &str = "\
usage: tower-api-key-vspc [--listen ADDR] [--database URL] [--admin-password PW]
                          [--max-key-days N] [--rate-limit N] [--last-used-interval S]

  --listen ADDR          address to listen on (default 127.0.0.1:1280)
  --database URL         sqlite:PATH, sqlite::memory:, postgres://USER@HOST:PORT/DB or
                         redis://HOST:PORT/ (default sqlite:tower-api-key.db); servers on one
                         PostgreSQL or Redis database share keys and revoke them on every node
  --admin-password PW    password of the admin user when it is created (also env ADMIN_PASSWORD);
                         without one, a password is generated and printed once
  --max-key-days N       longest lifetime of a new API key, in days; keys created without an
                         expirationDate get it (default: keys live until disabled or deleted)
  --rate-limit N         requests per minute for each API key and each user's access tokens;
                         beyond it 429 with Retry-After (default: no limit)
  --last-used-interval S seconds between the batched writes of keys' lastUsedDate (default 60)

environment:
  JWT_SECRET             secret that signs access tokens (at least 32 bytes); without it one is
                         generated per start and access tokens do not survive a restart
  RUST_LOG               log filter (default info)";

/// The command line, parsed by hand.
struct Args {
    listen: SocketAddr,
    database: String,
    admin_password: Option<Zeroizing<String>>,
    max_key_days: Option<u64>,
    rate_limit: Option<u32>,
    last_used_interval: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = DEFAULT_LISTEN.to_owned();
    let mut database = DEFAULT_DATABASE.to_owned();
    let mut admin_password = None;
    let mut max_key_days = None;
    let mut rate_limit = None;
    let mut last_used_interval = 60;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--listen" => listen = value()?,
            "--database" => database = value()?,
            "--admin-password" => admin_password = Some(Zeroizing::new(value()?)),
            "--max-key-days" => max_key_days = Some(positive(&flag, &value()?)?),
            "--rate-limit" => {
                let n = positive(&flag, &value()?)?;
                rate_limit =
                    Some(u32::try_from(n).map_err(|_| format!("{flag}: {n} is too large"))?);
            }
            "--last-used-interval" => last_used_interval = positive(&flag, &value()?)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let listen = listen
        .parse()
        .map_err(|_| format!("--listen: {listen} is not an address like 127.0.0.1:1280"))?;
    let admin_password = admin_password.or_else(|| {
        std::env::var("ADMIN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
            .map(Zeroizing::new)
    });
    Ok(Args {
        listen,
        database,
        admin_password,
        max_key_days,
        rate_limit,
        last_used_interval,
    })
}

/// A whole number above zero, for `flag`.
fn positive(flag: &str, value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{flag}: {value} is not a whole number above zero"))
}

/// The JWT secret from `JWT_SECRET`, or a fresh random one.
fn jwt_secret() -> Result<Zeroizing<Vec<u8>>, String> {
    match std::env::var("JWT_SECRET") {
        Ok(secret) if !secret.is_empty() => {
            if secret.len() < MIN_SECRET_LEN {
                tracing::warn!("JWT_SECRET is shorter than {MIN_SECRET_LEN} bytes");
            }
            tracing::info!("signing access tokens with JWT_SECRET");
            Ok(Zeroizing::new(secret.into_bytes()))
        }
        _ => {
            let mut secret = Zeroizing::new(vec![0u8; MIN_SECRET_LEN]);
            getrandom::fill(&mut secret).map_err(|e| format!("random number generator: {e}"))?;
            tracing::info!(
                "JWT_SECRET not set: access tokens are signed with a secret generated for this \
                 start and stop working when the server restarts"
            );
            Ok(secret)
        }
    }
}

/// The store the server runs on, kept to close it cleanly at shutdown.
enum Store {
    Sqlite(SqliteStore),
    // Boxed: the PostgreSQL handle is several times larger than the others.
    Postgres(Box<PostgresStore>),
    Redis(RedisStore),
}

impl Store {
    async fn open(url: &str) -> Result<Store, String> {
        // Database URLs may carry credentials: name the scheme in messages, never the URL.
        let lower = url.to_ascii_lowercase();
        let opened = if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            PostgresStore::connect(url)
                .await
                .map(|s| Store::Postgres(Box::new(s)))
        } else if lower.starts_with("redis://") {
            RedisStore::connect(url).await.map(Store::Redis)
        } else if lower.starts_with("sqlite:") {
            SqliteStore::connect(url).await.map(Store::Sqlite)
        } else {
            return Err(
                "--database must be sqlite:PATH, sqlite::memory:, postgres://… or redis://…"
                    .to_owned(),
            );
        };
        opened.map_err(|e| format!("opening the {} database: {e}", scheme_of(url)))
    }

    /// The key ring for the layer and the same store as accounts for the management API.
    fn handles(&self, last_used_interval: Duration) -> (KeyRing, Arc<dyn AccountStore>) {
        let both = |store: Arc<dyn KeyStore>, accounts: Arc<dyn AccountStore>| {
            let ring = KeyRing::builder(store)
                .track_last_used(last_used_interval)
                .build();
            (ring, accounts)
        };
        match self {
            Store::Sqlite(s) => both(Arc::new(s.clone()), Arc::new(s.clone())),
            Store::Postgres(s) => both(Arc::new((**s).clone()), Arc::new((**s).clone())),
            Store::Redis(s) => both(Arc::new(s.clone()), Arc::new(s.clone())),
        }
    }

    async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
            // Redis connections close when the last handle is dropped.
            Store::Redis(_) => {}
        }
    }
}

/// The part of a database URL before `:`, which is safe to print.
fn scheme_of(url: &str) -> &str {
    url.split(':').next().unwrap_or("")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // Without a Ctrl-C handler, wait for the other signal only.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// A listener with room for 1024 connections waiting to be accepted. `TcpListener::bind` asks
/// for 128 (the standard library's figure): a burst of a few hundred connections overflows that,
/// and each dropped SYN costs its client a one-second retransmission, real logins included.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn run(args: Args) -> Result<(), String> {
    // Before any request: the layer registers its counters with the recorder it finds first.
    let recorder = install_recorder().map_err(|e| format!("metrics recorder: {e}"))?;
    tokio::spawn(run_upkeep(recorder.clone()));
    let store = Store::open(&args.database).await?;
    let (ring, accounts) = store.handles(Duration::from_secs(args.last_used_interval));
    // The scheme only: a database URL may carry a password.
    tracing::info!(database = scheme_of(&args.database), "store opened");

    let boot = bootstrap_admin(
        accounts.as_ref(),
        args.admin_password.as_deref().map(String::as_str),
    )
    .await
    .map_err(|e| format!("creating the {ADMIN_USER_NAME} user: {e}"))?;
    if !boot.created() {
        tracing::info!(
            user_uid = boot.user_uid(),
            "user {ADMIN_USER_NAME} exists; keeping it"
        );
        if args.admin_password.is_some() {
            tracing::info!("the given admin password is ignored: the existing user keeps its own");
        }
    } else if let Some(password) = boot.generated_password() {
        // The only time this password is shown: the store keeps its Argon2id hash alone.
        println!();
        println!("  created user {ADMIN_USER_NAME} with password: {password}");
        println!("  (shown once; it is not stored and will not be printed again)");
        println!();
    } else {
        tracing::info!(
            user_uid = boot.user_uid(),
            "created user {ADMIN_USER_NAME} with the given password"
        );
    }
    drop(boot);

    let secret = jwt_secret()?;
    let mut admin = Admin::new(ring.clone(), accounts, &secret).with_metrics(recorder);
    drop(secret);
    if let Some(days) = args.max_key_days {
        admin = admin.with_max_key_lifetime(Duration::from_secs(days.saturating_mul(86_400)));
    }
    if let Some(per_minute) = args.rate_limit {
        admin = admin.with_rate_limit(RateLimit::per_minute(per_minute));
    }
    let app = admin.router().layer(trace_layer());

    let listener = listen(args.listen).map_err(|e| format!("listening on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("listening on {}: {e}", args.listen))?;
    tracing::info!(
        "listening on http://{addr} (API under http://{addr}/api/v3, Prometheus metrics at \
         http://{addr}/metrics)"
    );
    // The client's address lets the token endpoint throttle failed logins per client.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server: {e}"))?;
    // Uses of the last interval, before the store closes.
    if let Err(e) = ring.write_uses().await {
        tracing::warn!(error = %e, "could not record when keys were last used");
    }
    store.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Colours only on a terminal: logs sent to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
