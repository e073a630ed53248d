//! `metrod`: lock the state dir, open the state, serve the socket, and stop
//! cleanly on SIGTERM/SIGINT.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, BrokerOptions};
use crate::config::live::LiveConfig;
use crate::service::{self, systemd};
use crate::station::{Registry, StationCtx, StationKind};
use crate::stations::webhook;
use crate::store::log::{FsyncPolicy, LogOptions};
use crate::{paths, server};

/// metrod: the metro broker daemon (foreground; logs to stderr).
#[derive(Debug, Parser)]
#[command(name = "metrod", version, about)]
pub struct Args {
    /// State directory [default: $METRO_STATE_DIR, $XDG_STATE_HOME/metro, ~/.local/state/metro]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Socket path [default: $METRO_SOCKET, else <state dir>/metro.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// When appends are synced to disk before they are answered:
    /// always | interval:<ms> | never
    #[arg(long, default_value = "always", value_parser = parse_fsync)]
    pub fsync: FsyncPolicy,
    /// Longest request line accepted, in bytes.
    #[arg(long, default_value_t = crate::proto::DEFAULT_MAX_REQUEST, value_parser = parse_size)]
    pub max_request_bytes: usize,
    /// Memory kept for recent events served live to subscribers, in bytes.
    #[arg(long, default_value_t = 8 << 20, value_parser = parse_size)]
    pub ring_bytes: usize,
    /// Explicit-ack subscriptions pause after this many unacknowledged events.
    #[arg(long, default_value_t = 1024)]
    pub max_unacked: usize,
    /// ... or once their unacked events hold this many bytes (e.g. 1M).
    #[arg(long, default_value_t = crate::broker::DEFAULT_MAX_UNACKED_BYTES, value_parser = parse_size)]
    pub max_unacked_bytes: usize,
    /// Subscriptions one connection may hold at once.
    #[arg(long, default_value_t = crate::broker::DEFAULT_MAX_SUBSCRIPTIONS)]
    pub max_subscriptions: usize,
    /// Client connections served at once (more are refused with `limit`).
    #[arg(long, default_value_t = crate::broker::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Roll history.jsonl into a segment at this size (e.g. 64M).
    #[arg(long, default_value = "64M", value_parser = parse_bytes)]
    pub segment_bytes: u64,
    /// Also roll history.jsonl once it is this old (e.g. 1d, 12h).
    #[arg(long, value_parser = parse_age)]
    pub segment_age: Option<Duration>,
    /// Delete the oldest segments while the log takes more than this (e.g. 1G).
    #[arg(long, value_parser = parse_bytes)]
    pub retain_bytes: Option<u64>,
    /// Delete segments whose newest event is older than this (e.g. 30d).
    #[arg(long, value_parser = parse_age)]
    pub retain_age: Option<Duration>,
    /// Webhook HTTP listener: ip:port (port 0 picks a free one), or `off`.
    #[arg(long, env = "METRO_WEBHOOK_ADDR", default_value = webhook::DEFAULT_ADDR)]
    pub webhook_addr: webhook::ListenAddr,
    /// Largest webhook request body accepted, in bytes.
    #[arg(long, default_value_t = webhook::DEFAULT_MAX_BODY, value_parser = parse_size)]
    pub webhook_max_body: usize,
    /// Webhook HTTP connections served at once (more wait in the backlog).
    #[arg(long, default_value_t = webhook::http::DEFAULT_MAX_CONNECTIONS)]
    pub webhook_max_connections: usize,
    /// Time a webhook request's head may take to arrive (also the idle
    /// keep-alive timeout), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_age)]
    pub webhook_header_timeout: Duration,
    /// Time a webhook request's body may take to arrive, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_age)]
    pub webhook_body_timeout: Duration,
    /// Loop guard: refuse an agent's automatic answer that would be more
    /// than this many hops from a person's (or service's) message.
    #[arg(long, default_value_t = crate::broker::DEFAULT_MAX_HOPS)]
    pub max_hops: u32,
    /// How long an idempotency key is remembered (e.g. 10m, 1h).
    #[arg(long, default_value = "10m", value_parser = parse_age)]
    pub dedupe_window: Duration,
    /// Also write every new event as a JSON line on standard output (for a
    /// parent process that read the TypeScript metro's dispatcher).
    #[arg(long)]
    pub stdout: bool,
    /// Join a cluster through this NATS server (overrides `[cluster] url`;
    /// docs/cluster.md), e.g. nats://host:4222.
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// This node's name in the cluster (overrides `[cluster] node`;
    /// default: the host name).
    #[arg(long, value_name = "NAME")]
    pub cluster_node: Option<String>,
    /// How long a station's lease lasts in the cluster (overrides
    /// `[cluster] lease`; default 10s; docs/cluster.md).
    #[arg(long, value_name = "DURATION")]
    pub cluster_lease: Option<String>,
    #[command(flatten)]
    pub config: service::ConfigArgs,
}

/// A size of at least 4096 bytes: `4096`, `64K`, `64M`, `2G` (binary units).
fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_size_at_least(s, 4096)
}

/// A size of at least 1024 bytes, as a `usize` (same units).
fn parse_size(s: &str) -> Result<usize, String> {
    let n = parse_size_at_least(s, 1024)?;
    usize::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

fn parse_size_at_least(s: &str, min: u64) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (bytes, or with K, M or G)"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes < min {
        return Err(format!("must be at least {min} bytes"));
    }
    Ok(bytes)
}

/// `90s`, `15m`, `12h`, `30d`.
fn parse_age(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 90s, 15m, 12h or 30d: {e}"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse()
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Busy(String),
    /// The config file cannot be used (exit status [`service::EXIT_CONFIG`]).
    #[error("{0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// Entry point of the `metrod` binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    // Before any thread exists: it unsets LISTEN_FDS/LISTEN_PID.
    systemd::take_activation();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("metrod")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("metrod: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("metrod: {e}");
            match e {
                StartError::Config(_) => ExitCode::from(service::EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("METRO_LOG")
        // serenity narrates every shard step at info; metro says what
        // matters in its own words (the station's status).
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,serenity=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_target(false)
        .try_init();
}

/// Creates the state dir `0700` (tightening an existing one) and refuses a
/// dir owned by another user.
fn prepare_state_dir(dir: &Path) -> Result<(), StartError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(format!("cannot create state dir {}", dir.display())))?;
    let meta = fs::metadata(dir).map_err(io_err(format!("cannot read {}", dir.display())))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(StartError::Busy(format!(
            "state dir {} belongs to uid {}, not to you (uid {me})",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            "state dir {} was readable by others (mode {:o}); setting it to 0700",
            dir.display(),
            meta.mode() & 0o777
        );
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("cannot chmod {}", dir.display())))?;
    }
    Ok(())
}

/// Takes the state dir's exclusive lock and writes our pid into it.
fn lock_state_dir(dir: &Path) -> Result<Flock<File>, StartError> {
    let path = dir.join("metrod.lock");
    let file = crate::store::open_state(
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600),
        &path,
    )
    .map_err(io_err(format!("cannot open {}", path.display())))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let _ = lock.set_len(0);
            let _ = lock.rewind();
            let _ = writeln!(lock, "{}", std::process::id());
            let _ = lock.sync_data();
            Ok(lock)
        }
        Err((mut file, errno)) => {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                Err(StartError::Busy(format!(
                    "another metrod{} is already running on state dir {}; stop it first or use another --state-dir",
                    if pid.is_empty() { String::new() } else { format!(" (pid {pid})") },
                    dir.display()
                )))
            } else {
                Err(StartError::Io {
                    what: format!("cannot lock {}", path.display()),
                    source: io::Error::from(errno),
                })
            }
        }
    }
}

pub async fn run(args: Args) -> Result<(), StartError> {
    run_with(args, Vec::new(), CancellationToken::new()).await
}

/// [`run`] with station kinds registered after the built-in ones (a
/// station outside this crate; tests/loopback.rs), until SIGTERM, SIGINT
/// or `stop`.
pub async fn run_with(
    args: Args,
    extra: Vec<Arc<dyn StationKind>>,
    stop: CancellationToken,
) -> Result<(), StartError> {
    let state_dir = args.state_dir.clone().unwrap_or_else(paths::state_dir);
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None if args.state_dir.is_some() => state_dir.join("metro.sock"),
        None => paths::socket(),
    };
    prepare_state_dir(&state_dir)?;
    let _lock = lock_state_dir(&state_dir)?;
    let config = LiveConfig::load(&args.config.config_path())
        .map_err(|e| StartError::Config(format!("{e}; metrod does not start on it")))?;

    let opts = BrokerOptions {
        log: LogOptions {
            fsync: args.fsync,
            ring_bytes: args.ring_bytes,
            segment_bytes: args.segment_bytes,
            segment_age: args.segment_age,
            retain_bytes: args.retain_bytes,
            retain_age: args.retain_age,
        },
        max_request: args.max_request_bytes,
        max_unacked: args.max_unacked,
        max_unacked_bytes: args.max_unacked_bytes,
        max_subscriptions: args.max_subscriptions,
        max_connections: args.max_connections,
        max_hops: args.max_hops,
        dedupe_window: args.dedupe_window,
    };
    let limits = webhook::http::Limits {
        max_connections: args.webhook_max_connections,
        header_timeout: args.webhook_header_timeout,
        body_timeout: args.webhook_body_timeout,
    };
    let hooks = webhook::Config {
        addr: args.webhook_addr,
        max_body: args.webhook_max_body,
        fsync: args.fsync != FsyncPolicy::Never,
    };
    let (webhook_kind, mount) = webhook::kind::WebhookKind::new(hooks, limits);
    let mut kinds = crate::stations::builtin(webhook_kind);
    kinds.extend(extra);
    // Which lines are stations' rather than agents' is known from the
    // kinds, before claims.json is read (no station opens yet).
    let platforms = crate::station::platforms(&kinds);
    let (mut broker, startup) = Broker::open(&state_dir, opts, platforms).map_err(io_err(
        format!("cannot open the state in {}", state_dir.display()),
    ))?;
    if startup.cut_bytes > 0 {
        tracing::warn!(
            "history.jsonl ended in a torn line (a crash during a write): cut {} bytes; the log now ends at offset {}",
            startup.cut_bytes,
            startup.log_bytes
        );
    }
    for r in &startup.cursor_repairs {
        tracing::warn!(
            "cursor {}: {} (it held {:?}); set to {}, an entry boundary",
            r.slug,
            r.why,
            r.was,
            r.now
        );
    }
    // The config's sections are the core's and the registered kinds'.
    let check_kinds = kinds.clone();
    config
        .set_check(Box::new(move |c| {
            crate::station::check_config(&check_kinds, c)
        }))
        .map_err(|e| StartError::Config(format!("{e}; metrod does not start on it")))?;
    let mut cluster_cfg = config.current().cluster.clone();
    if let Some(url) = &args.cluster {
        cluster_cfg.url = Some(url.clone());
    }
    if let Some(node) = &args.cluster_node {
        cluster_cfg.node = Some(node.clone());
    }
    if let Some(lease) = &args.cluster_lease {
        cluster_cfg.lease = Some(lease.clone());
    }
    broker.config = Arc::new(config);
    let broker = Arc::new(broker);
    // No `[cluster]` and no --cluster: no NATS code runs.
    let cluster = if cluster_cfg.is_empty() {
        None
    } else {
        let c = crate::cluster::join(&broker, &cluster_cfg, kinds.clone())
            .await
            .map_err(|e| StartError::Config(format!("{e}; metrod does not start on it")))?;
        let _ = broker.cluster.set(c.clone());
        Some(c)
    };
    let shutdown = CancellationToken::new();
    let ctx = StationCtx {
        log: broker.log.clone(),
        state_dir: state_dir.clone(),
        fsync: args.fsync != FsyncPolicy::Never,
        config: broker.config.subscribe(),
    };
    let stations = Arc::new(Registry::new(ctx, kinds, shutdown.clone()));
    let _ = mount.set(Arc::new(crate::monitor::Monitor {
        broker: broker.clone(),
        stations: stations.clone(),
        shutdown: shutdown.clone(),
    }));
    // In a cluster, a chat station runs only where its lease is held: the
    // gate is in place before anything starts.
    if let Some(c) = &cluster {
        c.lead(&stations);
    }
    // Each station its config enables (the config in force: file and
    // environment): the webhook listener, telegram and discord with a token.
    stations
        .start_all()
        .await
        .map_err(io_err("cannot start the stations"))?;
    let served = systemd::listen(&socket)
        .map_err(io_err(format!("cannot listen on {}", socket.display())))?;
    let socket = served.path.clone();

    let mut sigterm = signal(SignalKind::terminate()).map_err(io_err("cannot watch SIGTERM"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("cannot watch SIGINT"))?;
    let reloader = service::reload::spawn(
        broker.config.clone(),
        !args.config.no_config_watch,
        shutdown.clone(),
    )
    .map_err(io_err("cannot watch SIGHUP"))?;
    // A reloaded config restarts only the stations whose part changed.
    let follower = tokio::spawn(stations.clone().follow());
    let flusher = tokio::spawn(flush_cursors(broker.clone(), shutdown.clone()));
    let mirror = args
        .stdout
        .then(|| tokio::spawn(service::stdout::mirror(broker.clone())));
    let tracker = TaskTracker::new();
    let accept = tokio::spawn(server::accept_loop(
        broker.clone(),
        stations.clone(),
        served.listener,
        shutdown.clone(),
        tracker.clone(),
    ));
    tracing::info!(
        "metrod {} ready: socket {}, state {}, log {} bytes, fsync {}",
        env!("CARGO_PKG_VERSION"),
        socket.display(),
        state_dir.display(),
        startup.log_bytes,
        args.fsync
    );
    systemd::ready(&service::reload::ready_status(&broker.config));

    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        _ = stop.cancelled() => "stop",
    };
    tracing::info!("{signal_name}: shutting down");
    systemd::stopping(&format!("{signal_name}: shutting down"));
    shutdown.cancel();
    let _ = accept.await;
    let _ = reloader.await;
    // A socket systemd made stays: its next connection starts us again.
    if !served.activated {
        let _ = fs::remove_file(&socket);
    }
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within 5 s");
    }
    let _ = follower.await;
    // The webhook listener lets deliveries in flight finish; the telegram
    // poller stops at once (an update it was storing stays unconfirmed and
    // comes again); the discord gateway closes after the dispatch being
    // stored. Each gets 5 s.
    stations.shutdown().await;
    if let Some(c) = cluster {
        // Before the log stops: the consumer's last append lands, the
        // publisher writes its mark.
        c.stop().await;
    }
    broker.log.shutdown().await;
    if let Some(m) = mirror {
        // It ends once it has written what the writer committed last.
        let _ = tokio::time::timeout(Duration::from_secs(5), m).await;
    }
    let _ = flusher.await;
    if let Err(e) = broker.flush_cursors() {
        tracing::error!("could not write cursors at shutdown: {e}");
    }
    tracing::info!("stopped; log ends at offset {}", broker.log.end());
    Ok(())
}

/// Writes changed cursors every 100 ms until shutdown.
async fn flush_cursors(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.flush_cursors()).await;
    }
}
