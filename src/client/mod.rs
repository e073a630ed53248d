//! `metroctl`, the thin client: one subcommand per op (or group of ops),
//! each a typed [`crate::proto::Request`] over the socket. Files: [`conn`]
//! (the connection), [`args`] (arguments → request fields), [`identity`]
//! (who we act as), [`output`] (JSON lines or human rows), [`tail`] (the
//! streaming command), [`since`] (`--since` forms), [`status`] (who you
//! are, the daemon, your claims and cursor), [`daemonctl`] (`start`,
//! `stop`: metrod in the background), [`follow`] (a subscription that
//! reconnects),
//! [`stop`] (signals and end of stdin), [`webhook`] (webhook endpoints),
//! [`tunnel`] (cloudflared config, `tunnel check`), [`service`] (user
//! service files), [`setup`] (the config file), [`doctor`] (the health
//! check), [`messages`] (`send`, `reply`, `edit`, `react`, `download`,
//! `fetch`, `allow`, `deny`), [`mcp`] (the Claude Code channel, an MCP
//! server on stdio), [`top`] (the live full-screen view), [`commands`]
//! (the other one-request commands and the dispatch).
//!
//! The client imports only [`crate::proto`], [`crate::line`],
//! [`crate::config`] and [`crate::paths`]: never the
//! daemon's modules.

pub mod args;
pub mod commands;
pub mod conn;
pub mod daemonctl;
pub mod doctor;
pub mod follow;
pub mod help;
pub mod identity;
pub mod mcp;
pub mod messages;
pub mod output;
pub mod secret;
pub mod service;
pub mod setup;
pub mod since;
pub mod status;
pub mod stop;
pub mod tail;
pub mod top;
pub mod tunnel;
pub mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit code when the daemon cannot be reached.
pub const EXIT_NOT_RUNNING: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "metrod is not running: cannot connect to {} ({cause}).\n\
         Start it with `metrod` (it uses $METRO_STATE_DIR, else ~/.local/state/metro), \
         or point metroctl at its socket with --socket or $METRO_SOCKET.",
        socket.display()
    )]
    NotRunning {
        socket: PathBuf,
        cause: std::io::Error,
    },
    #[error("{code}: {message}")]
    Daemon { code: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(std::io::Error),
    /// A check (`doctor`, `tunnel check`) found problems; the report is printed.
    #[error("{0}")]
    Check(String),
}

/// metroctl: talk to the metro broker.
#[derive(Debug, Parser)]
#[command(
    name = "metroctl",
    version,
    about,
    after_help = help::TOP,
    after_long_help = help::TOP_LONG
)]
pub struct Cli {
    /// Socket of metrod [default: $METRO_SOCKET, else <state dir>/metro.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print JSON even on a terminal (piped output is JSON already).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Who this command acts as.
#[derive(Debug, Args, Clone, Default)]
pub struct Identity {
    /// Act as this identity (--from is an alias) [default: $METRO_AS, else
    /// Claude Code's or Codex's environment: see `metroctl --help`]
    #[arg(long = "as", alias = "from", value_name = "URI")]
    pub as_: Option<String>,
}

/// Print JSON even on a terminal (the same as the global --json).
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct Json {
    /// Print JSON even on a terminal (piped output is JSON already).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the daemon's hello (protocol, version, ops).
    #[command(after_help = help::HELLO)]
    Hello,
    /// Who you act as and why, the daemon, its stations, your claims and cursor.
    #[command(visible_alias = "whoami", after_help = help::STATUS)]
    Status(status::StatusArgs),
    /// Start metrod in the background (log in the state dir) and wait until it answers.
    #[command(after_help = help::START)]
    Start(daemonctl::StartArgs),
    /// Stop the metrod on the socket cleanly (SIGTERM) and wait until it is gone.
    #[command(after_help = help::STOP)]
    Stop,
    /// Print events; with --follow, keep printing as they arrive.
    #[command(after_help = help::TAIL)]
    Tail(tail::TailArgs),
    /// Claim a line (last writer wins unless --if-free; an agent's line
    /// belongs to that agent and no other identity can claim it).
    #[command(after_help = help::CLAIM)]
    Claim {
        /// The line: telegram/<chatId>[/<topicId>], discord/<channelId>,
        /// webhook/<endpointId>, or an agent's line (claude/user/<id>).
        line: String,
        #[command(flatten)]
        who: Identity,
        /// Fail with `conflict` if someone else owns the line.
        #[arg(long)]
        if_free: bool,
    },
    /// Release a line (whoever owns it).
    #[command(after_help = help::RELEASE)]
    Release {
        /// The line to release.
        line: String,
    },
    /// List claims: which identity owns which line.
    #[command(after_help = help::CLAIMS)]
    Claims {
        #[command(flatten)]
        json: Json,
    },
    /// Send a message to a line (TEXT `-` reads stdin).
    #[command(after_help = help::SEND)]
    Send(messages::SendArgs),
    /// Reply to a message (TEXT `-` reads stdin).
    #[command(after_help = help::REPLY)]
    Reply(messages::ReplyArgs),
    /// Edit a message.
    #[command(after_help = help::EDIT)]
    Edit(messages::EditArgs),
    /// React to a message ("" clears).
    #[command(after_help = help::REACT)]
    React(messages::ReactArgs),
    /// Save a message's files (telegram, discord) into a directory.
    #[command(after_help = help::DOWNLOAD)]
    Download(messages::DownloadArgs),
    /// The last messages of a line, oldest first (discord: from Discord;
    /// others: from metro's log).
    #[command(after_help = help::FETCH)]
    Fetch(messages::FetchArgs),
    /// Admit the holder of a pairing code (--list: who is in, who waits).
    #[command(after_help = help::ALLOW)]
    Allow(messages::AllowArgs),
    /// Block a platform user from reaching the agents.
    #[command(after_help = help::DENY)]
    Deny(messages::DenyArgs),
    /// Search the log, newest first.
    #[command(after_help = help::HISTORY)]
    History(commands::HistoryArgs),
    /// Recently seen conversations.
    #[command(after_help = help::LINES)]
    Lines {
        #[command(flatten)]
        json: Json,
    },
    /// Stations and their status.
    #[command(after_help = help::STATIONS)]
    Stations {
        #[command(flatten)]
        json: Json,
    },
    /// Uptime, log size, subscriptions, cursors and config.
    #[command(after_help = help::STATS)]
    Stats {
        #[command(flatten)]
        json: Json,
    },
    /// Show a durable cursor: where it stands, how far behind the log.
    #[command(after_help = help::CURSOR)]
    Cursor {
        #[command(flatten)]
        who: Identity,
        /// Cursor name (instead of the identity's).
        #[arg(long, value_name = "NAME")]
        cursor: Option<String>,
    },
    /// Publish a raw event. For scripts and tests.
    #[command(after_help = help::PUBLISH)]
    Publish {
        /// The event, a JSON object with at least a `line` (`-` reads
        /// stdin); metrod sets id, ts and station.
        #[arg(value_name = "JSON")]
        event: String,
    },
    /// Webhook endpoints: add, list, remove.
    #[command(subcommand, after_help = help::WEBHOOK)]
    Webhook(webhook::WebhookCommand),
    /// Cloudflare Tunnel to the webhook listener: setup, check.
    #[command(subcommand, after_help = help::TUNNEL)]
    Tunnel(tunnel::TunnelCommand),
    /// Check the setup (metrod, permissions, disk, stations, config, log,
    /// cursors, service, tunnel); exit 1 when something needs you.
    #[command(after_help = help::DOCTOR)]
    Doctor(doctor::DoctorArgs),
    /// Run metrod as a user service (systemd, launchd): install, uninstall, status.
    #[command(subcommand, after_help = help::SERVICE)]
    Service(service::ServiceCommand),
    /// Write the config file: station tokens and allowlists (asks on a terminal).
    #[command(after_help = help::SETUP)]
    Setup(setup::SetupArgs),
    /// Serve metro to Claude Code as an MCP channel on stdio (push, tools,
    /// permission relay).
    #[command(after_help = help::MCP)]
    Mcp(mcp::McpArgs),
    /// Live full-screen view: stations, lines, subscriptions, events.
    ///
    /// Read-only: it follows the log with no identity and no cursor (ack
    /// none) and never claims. UNREAD: events on a line after its owner's
    /// cursor (the owner's live subscription's, else the stored cursor of
    /// that name) that the owner did not write; `n+` when that cursor is
    /// older than top's window (the last 10,000 events, at most 4 MiB
    /// back). LAG EV / LAG BYTES: events / bytes after a subscription's
    /// cursor. Keys: q or Ctrl-C quit, tab next pane, ↑↓ scroll, / filter
    /// lines (Enter keeps it, Esc clears it).
    #[command(after_help = help::TOP_VIEW)]
    Top(top::TopArgs),
    /// Print a shell completion script.
    #[command(after_help = help::COMPLETIONS)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Creates `dir` (and its parents) with `mode`; the error names the dir.
pub fn create_dir(dir: &std::path::Path, mode: u32) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| {
            CliError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", dir.display()),
            ))
        })
}

/// Entry point of the `metroctl` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.json {
        output::force_json();
    }
    let socket = cli.socket.clone().unwrap_or_else(crate::paths::socket);
    match commands::run(&socket, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        // A check's summary already ended its report on a terminal.
        Err(CliError::Check(_)) if !output::json_mode(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("metroctl: {e}");
            match e {
                CliError::NotRunning { .. } => ExitCode::from(EXIT_NOT_RUNNING),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
