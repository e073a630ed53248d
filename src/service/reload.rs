//! Reloading the config without a restart.
//!
//! The config in force is [`crate::config::live::LiveConfig`]. [`spawn`]
//! starts the task that reloads it when the file changes (a `notify` watch on its parent directory, so that
//! editors that replace the file by a rename are seen too) and on SIGHUP
//! (`systemctl --user reload metrod`). A new config that does not load
//! (unreadable, not valid, readable by others) is rejected: the reason is
//! logged and kept for `stats`, and the old config stays in force.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::systemd;
use crate::config::live::{LiveConfig, Reload};

/// How long the watcher waits after a change before it reads the file, so
/// that an editor's write, chmod and rename are read once, complete.
const SETTLE: Duration = Duration::from_millis(150);

/// How often a config dir that does not exist yet is looked for.
const DIR_POLL: Duration = Duration::from_secs(2);

/// Starts reloading `live` on SIGHUP and, unless `watch_file` is false,
/// when its file changes, until `shutdown`. The signal handler and the
/// watch are in place when this returns, so a change made right after
/// startup is not missed.
pub fn spawn(
    live: Arc<LiveConfig>,
    watch_file: bool,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel::<()>(1);
    let watcher = if watch_file {
        FileWatch::start(live.path(), tx.clone())
    } else {
        FileWatch::Off
    };
    let task = tokio::spawn(run(live, hup, watcher, tx, rx, shutdown));
    Ok(task)
}

async fn run(
    live: Arc<LiveConfig>,
    mut hup: tokio::signal::unix::Signal,
    mut watcher: FileWatch,
    tx: mpsc::Sender<()>,
    mut changed: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    // A change between the startup load and the watch taking hold.
    if matches!(watcher, FileWatch::On(_)) {
        live.reload("changed during startup");
    }
    let mut poll = tokio::time::interval(DIR_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config from {}", live.path().display());
                systemd::reloading();
                live.reload("SIGHUP");
                systemd::ready(&ready_status(&live));
            }
            Some(()) = changed.recv() => {
                tokio::time::sleep(SETTLE).await;
                while changed.try_recv().is_ok() {}
                if let Reload::Applied(_) = live.reload("the file changed") {
                    systemd::ready(&ready_status(&live));
                }
            }
            _ = poll.tick(), if matches!(watcher, FileWatch::Waiting) => {
                watcher = FileWatch::start(live.path(), tx.clone());
                if matches!(watcher, FileWatch::On(_)) {
                    live.reload("its directory appeared");
                }
            }
        }
    }
}

/// `STATUS=` after a (re)load.
pub fn ready_status(live: &LiveConfig) -> String {
    let c = live.current();
    let tokens: Vec<String> = c
        .chat_sections()
        .iter()
        .map(|(name, s)| {
            let on = if s.token.is_some() { "set" } else { "none" };
            format!("{name} token {on}")
        })
        .collect();
    format!(
        "serving; config {} ({})",
        live.path().display(),
        tokens.join(", ")
    )
}

/// The watch on the config file's directory.
enum FileWatch {
    /// `--no-config-watch`: SIGHUP only.
    Off,
    /// The directory does not exist yet: looked for every [`DIR_POLL`].
    Waiting,
    On(#[allow(dead_code)] notify::RecommendedWatcher),
}

impl FileWatch {
    fn start(path: &Path, tx: mpsc::Sender<()>) -> FileWatch {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            tracing::warn!(
                "cannot watch the config file {}: no directory; reload it with SIGHUP",
                path.display()
            );
            return FileWatch::Off;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if !dir.is_dir() {
            tracing::debug!(
                "config dir {} does not exist yet; looking for it every {} s",
                dir.display(),
                DIR_POLL.as_secs()
            );
            return FileWatch::Waiting;
        }
        let name = name.to_os_string();
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if matches!(ev.kind, EventKind::Access(_)) {
                return;
            }
            if ev.paths.iter().any(|p| p.file_name() == Some(&name)) {
                // A full channel already holds a pending reload.
                let _ = tx.try_send(());
            }
        };
        let watched = notify::recommended_watcher(handler)
            .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w));
        match watched {
            Ok(w) => {
                tracing::debug!("watching {} for config changes", dir.display());
                FileWatch::On(w)
            }
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} for config changes ({e}); reload it with SIGHUP",
                    dir.display()
                );
                FileWatch::Off
            }
        }
    }
}
