//! End to end over HTTP: one axum server, the same handler on an open route and on a key-protected
//! route, driven by `wrk` over loopback in alternating rounds with many distinct keys.
//!
//! ```sh
//! cargo bench --bench http                 # 10 rounds of 5 s per route
//! HTTP_BENCH_ROUNDS=20 HTTP_BENCH_SECONDS=3 cargo bench --bench http
//! ```
//!
//! Needs `wrk` (`apt-get install -y wrk`); without it the bench says so and exits. Reports
//! requests/s and p99 per route and round, and the median and spread of the per-round throughput
//! ratio protected/open.

#![allow(missing_docs)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;

use axum::routing::get;
use axum::Router;
use tower_api_key::{ApiKeyLayer, Identity, KeyRing, MemoryStore, NewKey, Owner, Scope};

const KEYS: usize = 10_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn handler(identity: Option<Identity>) -> &'static str {
    // The same work on both routes: the open route simply finds no identity.
    std::hint::black_box(identity);
    "ok"
}

struct Round {
    rps: f64,
    p99_ms: f64,
}

fn wrk(addr: SocketAddr, path: &str, seconds: u64, script: &std::path::Path) -> Option<Round> {
    let output = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(format!("http://{addr}{path}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))?
        .trim();
    let p99_ms = if let Some(us) = p99.strip_suffix("us") {
        us.parse::<f64>().ok()? / 1000.0
    } else if let Some(ms) = p99.strip_suffix("ms") {
        ms.parse().ok()?
    } else {
        p99.strip_suffix('s')?.parse::<f64>().ok()? * 1000.0
    };
    let non_2xx = text.contains("Non-2xx");
    assert!(!non_2xx, "some requests were refused:\n{text}");
    Some(Round { rps, p99_ms })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing useful either.
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("http bench skipped: wrk is not installed (apt-get install -y wrk)");
        return;
    }
    let rounds = env("HTTP_BENCH_ROUNDS", 10);
    let seconds = env("HTTP_BENCH_SECONDS", 5);

    // The server gets one worker thread, wrk the other core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let ring = KeyRing::new(MemoryStore::new());
    let owner = Owner {
        user_uid: "u".into(),
        user_name: "bench".into(),
        company_id: "c".into(),
        company_name: "Bench".into(),
    };
    let keys: Vec<String> = rt.block_on(async {
        let mut keys = Vec::with_capacity(KEYS);
        for _ in 0..KEYS {
            let issued = ring
                .issue(
                    NewKey::new(owner.clone())
                        .description("http bench")
                        .scope(Scope::REST),
                )
                .await
                .expect("issued");
            keys.push(issued.key().to_owned());
        }
        keys
    });

    let dir = std::env::temp_dir().join(format!("tower-api-key-http-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let keys_file = dir.join("keys.txt");
    std::fs::write(&keys_file, keys.join("\n")).expect("keys written");
    let script = dir.join("keys.lua");
    let mut f = std::fs::File::create(&script).expect("script");
    // Every request, on both routes, carries a random one of the keys: same bytes on the wire.
    write!(
        f,
        r#"local keys = {{}}
for line in io.lines("{}") do keys[#keys + 1] = line end
math.randomseed(12345)
request = function()
  return wrk.format("GET", nil, {{["Authorization"] = "Bearer " .. keys[math.random(#keys)]}})
end
"#,
        keys_file.display()
    )
    .expect("script written");
    drop(f);

    let app = Router::new().route("/open", get(handler)).merge(
        Router::new()
            .route("/protected", get(handler))
            .route_layer(ApiKeyLayer::new(ring.clone()).require_scope(Scope::REST)),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move { axum::serve(listener, app).await });

    // Warm up both routes once.
    wrk(addr, "/open", 1, &script).expect("wrk ran");
    wrk(addr, "/protected", 1, &script).expect("wrk ran");

    println!("round  open req/s  open p99  protected req/s  protected p99  ratio");
    let mut ratios = Vec::new();
    let (mut open_rps, mut prot_rps, mut open_p99, mut prot_p99) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which route goes first, so drift in the machine's load hits both alike.
        let (open, protected) = if round % 2 == 0 {
            let o = wrk(addr, "/open", seconds, &script).expect("wrk ran");
            let p = wrk(addr, "/protected", seconds, &script).expect("wrk ran");
            (o, p)
        } else {
            let p = wrk(addr, "/protected", seconds, &script).expect("wrk ran");
            let o = wrk(addr, "/open", seconds, &script).expect("wrk ran");
            (o, p)
        };
        let ratio = protected.rps / open.rps;
        println!(
            "{round:>5}  {:>10.0}  {:>6.2}ms  {:>15.0}  {:>11.2}ms  {:.3}",
            open.rps, open.p99_ms, protected.rps, protected.p99_ms, ratio
        );
        ratios.push(ratio);
        open_rps.push(open.rps);
        prot_rps.push(protected.rps);
        open_p99.push(open.p99_ms);
        prot_p99.push(protected.p99_ms);
    }
    let spread = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        (min, max)
    };
    let (rmin, rmax) = spread(&ratios);
    let (omin, omax) = spread(&open_rps);
    let (pmin, pmax) = spread(&prot_rps);
    println!(
        "median: open {:.0} req/s (range {omin:.0}–{omax:.0}), p99 {:.2} ms; protected {:.0} req/s \
         (range {pmin:.0}–{pmax:.0}), p99 {:.2} ms",
        median(&mut open_rps),
        median(&mut open_p99),
        median(&mut prot_rps),
        median(&mut prot_p99),
    );
    println!(
        "protected/open throughput: median of {rounds} per-round ratios {:.3} (range {rmin:.3}–{rmax:.3}); \
         {KEYS} distinct keys",
        median(&mut ratios)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
