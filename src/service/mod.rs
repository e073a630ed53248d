//! Running as a service: what `metrod` does for a service manager.
//!
//! - [`systemd`]: the listening socket from socket activation
//!   (`LISTEN_FDS`), and `READY=1` / `RELOADING=1` / `STOPPING=1` through
//!   `NOTIFY_SOCKET`.
//! - [`reload`]: reloading the config in force
//!   ([`crate::config::live::LiveConfig`]) when the file changes or on
//!   SIGHUP.
//! - [`stdout`]: `--stdout`, every new event also written to standard
//!   output for a parent process.
//!
//! The unit files themselves live in `systemd/` and `launchd/` at the top of
//! the repository; `metroctl service install` writes them
//! (`src/client/service.rs`).

pub mod reload;
pub mod stdout;
pub mod systemd;

use std::path::PathBuf;

/// `metrod` flags about the config file and its reload.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Config file (station tokens, allowlists) [default: $METRO_CONFIG,
    /// $XDG_CONFIG_HOME/metro/config.toml, ~/.config/metro/config.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Do not watch the config file; reload it on SIGHUP only.
    #[arg(long)]
    pub no_config_watch: bool,
}

impl ConfigArgs {
    pub fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(crate::config::path)
    }
}

/// Exit status of `metrod` when its config file cannot be used
/// (`EX_CONFIG`); `metrod.service` does not restart on it
/// (`RestartPreventExitStatus=78`): a restart would fail the same way.
pub const EXIT_CONFIG: u8 = 78;
