//! metro-bench: starts real `metrod` processes on temp state dirs, drives
//! them over the real Unix socket with its own async clients, and prints
//! what it measured (see docs/benchmarks.md).
//!
//! ```text
//! cargo run --release --bin metro-bench -- [--json] [--smoke] [--only NAME] [--metrod PATH]
//! cargo run --release --bin metro-bench -- --redis     # metro beside Redis
//! ```

mod client;
mod daemon;
mod loggen;
mod report;
mod resp;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Parser;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// metro-bench: the metrod benchmark suite.
#[derive(Debug, Parser)]
#[command(name = "metro-bench", about)]
struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Scale everything down so the whole run takes a few seconds.
    #[arg(long)]
    smoke: bool,
    /// Run only this scenario (repeatable): publish, fanout, latency,
    /// replay, startup, memory, claims, bridge, redis.
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// Measure metro beside a `redis-server` from PATH with the same client
    /// (the `redis` scenario; same as `--only redis`).
    #[arg(long)]
    redis: bool,
    /// Within the scenarios run, only the cases whose name contains this
    /// (e.g. `16x64_fsync_never`; for profiling one case).
    #[arg(long, value_name = "SUBSTR")]
    case: Option<String>,
    /// The metrod binary [default: `metrod` next to this executable].
    #[arg(long, value_name = "PATH")]
    metrod: Option<PathBuf>,
    /// Worker threads of the bench's own client runtime (the daemon gets
    /// the rest of the machine).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

/// What every scenario gets.
pub struct Ctx {
    pub metrod: PathBuf,
    pub smoke: bool,
    pub case: Option<String>,
}

impl Ctx {
    /// `full` normally, `smoke` under `--smoke`.
    pub fn pick<T>(&self, full: T, smoke: T) -> T {
        if self.smoke {
            smoke
        } else {
            full
        }
    }

    /// Whether the case `name` is to be run (`--case`).
    pub fn wants(&self, name: &str) -> bool {
        self.case.as_ref().is_none_or(|c| name.contains(c.as_str()))
    }

    pub fn spec<'a>(&'a self, fsync: &'a str) -> daemon::Spec<'a> {
        daemon::Spec {
            metrod: &self.metrod,
            fsync,
            args: Vec::new(),
        }
    }
}

/// Nanoseconds on a monotonic clock shared by every thread of the bench.
pub fn clock_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.redis {
        args.only.push("redis".into());
    }
    let names: Vec<&str> = if args.only.is_empty() {
        scenarios::NAMES.to_vec()
    } else {
        scenarios::NAMES
            .iter()
            .chain(&scenarios::OPTIONAL)
            .copied()
            .collect()
    };
    for o in &args.only {
        if !names.contains(&o.as_str()) {
            eprintln!(
                "metro-bench: unknown scenario {o:?}; one of {}",
                names.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    let metrod = match args.metrod.clone() {
        Some(p) => p,
        None => match std::env::current_exe() {
            Ok(p) => p.with_file_name("metrod"),
            Err(e) => {
                eprintln!("metro-bench: cannot find own executable: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if !metrod.is_file() {
        eprintln!(
            "metro-bench: no metrod at {} (build it, or pass --metrod PATH)",
            metrod.display()
        );
        return ExitCode::from(2);
    }
    let ctx = Ctx {
        metrod,
        smoke: args.smoke,
        case: args.case.clone(),
    };
    clock_ns();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("metro-bench: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let limit = Duration::from_secs(ctx.pick(240, 60));
    // The comparison runs every shape twice per round, three rounds.
    let redis_limit = Duration::from_secs(ctx.pick(1200, 120));
    let mut results = Vec::new();
    for name in names {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        eprintln!("metro-bench: {name} …");
        let t0 = Instant::now();
        let cpu0 = report::CpuTicks::now();
        let outcome = rt.block_on(async {
            let limit = if name == "redis" { redis_limit } else { limit };
            match tokio::time::timeout(limit, scenarios::run(name, &ctx)).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {limit:?}").into()),
            }
        });
        let other_cpu_pct = report::CpuTicks::now().other_pct_since(&cpu0);
        let (cases, error, skipped) = match outcome {
            Ok(c) => (c, None, None),
            Err(e) => match e.downcast::<report::Skipped>() {
                Ok(s) => {
                    eprintln!("metro-bench: {name} skipped: {s}");
                    (Vec::new(), None, Some(s.0))
                }
                Err(e) => (Vec::new(), Some(e.to_string()), None),
            },
        };
        eprintln!(
            "metro-bench: {name} done in {:.1} s{}",
            t0.elapsed().as_secs_f64(),
            error
                .as_deref()
                .map(|e| format!(": FAILED: {e}"))
                .unwrap_or_default()
        );
        results.push(report::Scenario {
            name,
            cases,
            error,
            skipped,
            other_cpu_pct,
        });
    }
    // Anything a timed-out scenario left running (and its daemons) goes now.
    rt.shutdown_timeout(Duration::from_secs(1));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::to_json(ctx.smoke, &results)).unwrap_or_default()
        );
    } else {
        print!("{}", report::table(&results));
    }
    if results.iter().any(|s| s.error.is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
