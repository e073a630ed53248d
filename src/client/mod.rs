//! `metroctl`, the thin client: one subcommand per op (or group of ops),
//! each a request over the socket. Files: [`conn`] (the connection),
//! [`identity`] (who we act as), [`output`] (JSON lines or human rows),
//! [`tail`] (the streaming command), [`since`] (`--since` forms),
//! [`status`] (who you are, the daemon, your claims and cursor),
//! [`daemonctl`] (`start`, `stop`: metrod in the background), [`follow`] (a subscription that
//! reconnects), [`stop`] (signals and end of stdin), [`webhook`] (webhook endpoints),
//! [`tunnel`] (cloudflared config, `tunnel check`), [`service`] (user
//! service files), [`setup`] (the config file), [`doctor`] (the health
//! check), [`messages`] (`reply`, `download`, `fetch`, `allow`, `deny`, file
//! flags), [`mcp`] (the Claude Code channel, an MCP server on stdio),
//! [`top`] (the live full-screen view), [`commands`] (everything else).

pub mod commands;
pub mod conn;
pub mod daemonctl;
pub mod doctor;
pub mod follow;
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
#[command(name = "metroctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Socket of metrod [default: $METRO_SOCKET, else <state dir>/metro.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// JSON even on a terminal (every command that prints takes it).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Who this command acts as.
#[derive(Debug, Args, Clone, Default)]
pub struct Identity {
    /// Identity line [default: $METRO_AS, else the agent's environment]
    #[arg(long = "as", value_name = "URI")]
    pub as_: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the daemon's hello (protocol, version, ops).
    Hello,
    /// Who you act as and why, the daemon, its stations, your claims and cursor.
    #[command(visible_alias = "whoami")]
    Status(status::StatusArgs),
    /// Start metrod in the background (log in the state dir) and wait until it answers.
    Start(daemonctl::StartArgs),
    /// Stop the metrod on the socket cleanly (SIGTERM) and wait until it is gone.
    Stop,
    /// Print events; with --follow, keep printing as they arrive.
    Tail(tail::TailArgs),
    /// Claim a line (last writer wins unless --if-free; an agent's line
    /// belongs to that agent and no other identity can claim it).
    Claim {
        line: String,
        #[command(flatten)]
        who: Identity,
        /// Fail with `conflict` if someone else owns the line.
        #[arg(long)]
        if_free: bool,
    },
    /// Release a line.
    Release { line: String },
    /// List claims.
    Claims {
        #[arg(long)]
        json: bool,
    },
    /// Send a message to a line (TEXT `-` reads stdin).
    Send {
        line: String,
        text: String,
        /// Sender identity [default: as for --as]
        #[arg(long, value_name = "URI")]
        from: Option<String>,
        /// Do not claim the line (also METRO_NO_AUTO_CLAIM=1).
        #[arg(long)]
        no_claim: bool,
        /// Message id this replies to.
        #[arg(long, value_name = "ID")]
        reply_to: Option<String>,
        #[command(flatten)]
        attach: messages::AttachArgs,
    },
    /// Reply to a message (TEXT `-` reads stdin).
    Reply(messages::ReplyArgs),
    /// Edit a message.
    Edit {
        line: String,
        message_id: String,
        text: String,
        #[arg(long, value_name = "URI")]
        from: Option<String>,
        #[arg(long)]
        no_claim: bool,
        /// New inline buttons (JSON, as for send).
        #[arg(long, value_name = "JSON")]
        buttons: Option<String>,
    },
    /// React to a message ("" clears).
    React {
        line: String,
        message_id: String,
        emoji: String,
        #[arg(long, value_name = "URI")]
        from: Option<String>,
        #[arg(long)]
        no_claim: bool,
    },
    /// Save a message's files (telegram, discord) into a directory.
    Download(messages::DownloadArgs),
    /// The last messages of a line, oldest first (discord: from Discord;
    /// others: from metro's log).
    Fetch(messages::FetchArgs),
    /// Admit the holder of a pairing code (--list: who is in, who waits).
    Allow(messages::AllowArgs),
    /// Block a platform user from reaching the agents.
    Deny(messages::DenyArgs),
    /// Search the log, newest first.
    History(commands::HistoryArgs),
    /// Recently seen conversations.
    Lines {
        #[arg(long)]
        json: bool,
    },
    /// Stations and their status.
    Stations {
        #[arg(long)]
        json: bool,
    },
    /// Log size, uptime, subscriptions and cursors.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Show a durable cursor.
    Cursor {
        #[command(flatten)]
        who: Identity,
        /// Cursor name (instead of the identity's).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Publish a raw event (JSON object; `-` reads stdin). For scripts and tests.
    Publish {
        #[arg(value_name = "JSON")]
        event: String,
    },
    /// Webhook endpoints: add, list, remove.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Cloudflare Tunnel to the webhook listener: setup, check.
    #[command(subcommand)]
    Tunnel(tunnel::TunnelCommand),
    /// Check the setup (metrod, permissions, disk, stations, config, log,
    /// cursors, service, tunnel); exit 1 when something needs you.
    Doctor(doctor::DoctorArgs),
    /// Run metrod as a user service (systemd, launchd): install, uninstall, status.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Write the config file: station tokens and allowlists (asks on a terminal).
    Setup(setup::SetupArgs),
    /// Serve metro to Claude Code as an MCP channel on stdio (push, tools,
    /// permission relay).
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
    #[command(
        after_help = "Examples:\n  metroctl top\n  metroctl top --filter telegram\n  metroctl --socket /tmp/metro/metro.sock top"
    )]
    Top(top::TopArgs),
    /// Print a shell completion script: `metroctl completions bash > …`.
    Completions {
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
        Err(e) => {
            eprintln!("metroctl: {e}");
            match e {
                CliError::NotRunning { .. } => ExitCode::from(EXIT_NOT_RUNNING),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
