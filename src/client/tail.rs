//! `metroctl tail`: subscribe with explicit acks and acknowledge an event
//! only after it has been written (and flushed) to stdout, so a killed tail
//! loses nothing: what it had not printed is delivered again next time.
//! With `--follow` it reads through [`Follow`] (reconnects when metrod
//! goes away) and stops cleanly on SIGINT, SIGTERM or the end of a piped
//! stdin ([`stop`]): flush, ack, exit 0.

use std::io::{self, Write};
use std::path::Path;

use super::follow::{Follow, Item};
use super::{identity, output, stop, CliError, Identity};
use crate::proto::{AckMode, Mode, Since, Subscribe};
use clap::Args;

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub who: Identity,
    /// Keep printing new events as they arrive.
    #[arg(short, long)]
    pub follow: bool,
    #[command(flatten)]
    pub filters: Filters,
    /// Only this kind.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Where to start: cursor | start | tail | <byte offset>.
    #[arg(long, value_name = "WHERE")]
    pub since: Option<String>,
    /// Stop after this many events (0: no limit).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Also print events this identity wrote itself (hidden by default).
    #[arg(long)]
    pub echo: bool,
    /// With --follow: exit when metrod goes away instead of reconnecting.
    #[arg(long, requires = "follow")]
    pub no_reconnect: bool,
    /// Durable cursor name [default: the identity].
    #[arg(long, value_name = "NAME")]
    pub cursor: Option<String>,
    /// JSON lines even on a terminal.
    #[arg(long)]
    pub json: bool,
}

/// The mode and filter flags of a subscription, shared by `tail` and
/// `mcp` (protocol.md, subscribe).
#[derive(Debug, Args)]
pub struct Filters {
    /// Only lines this identity owns (mode mine-only).
    #[arg(long, conflicts_with_all = ["unclaimed", "all"])]
    pub strict: bool,
    /// Only lines nobody owns (mode unclaimed).
    #[arg(long, conflicts_with = "all")]
    pub unclaimed: bool,
    /// Everything (mode all).
    #[arg(long)]
    pub all: bool,
    /// Include webhook events in personal modes.
    #[arg(long)]
    pub include_webhooks: bool,
    /// Only this line.
    #[arg(long, value_name = "LINE")]
    pub chat: Option<String>,
    /// Only this station.
    #[arg(long, value_name = "NAME")]
    pub station: Option<String>,
}

impl Filters {
    /// Puts `mode`, `includeWebhooks`, `chat` and `station` in a
    /// `subscribe` request.
    pub fn apply(&self, req: &mut Subscribe) -> Result<(), CliError> {
        if self.strict {
            req.mode = Some(Mode::MineOnly);
        } else if self.unclaimed {
            req.mode = Some(Mode::Unclaimed);
        } else if self.all {
            req.mode = Some(Mode::All);
        }
        if self.include_webhooks {
            req.include_webhooks = Some(true);
        }
        if let Some(c) = &self.chat {
            let line = crate::line::line(c).map_err(|e| CliError::Usage(format!("--chat: {e}")))?;
            req.chat = Some(line);
        }
        req.station.clone_from(&self.station);
        Ok(())
    }
}

fn since_value(s: &str) -> Result<Since, CliError> {
    match s {
        "cursor" => Ok(Since::Cursor),
        "start" => Ok(Since::Start),
        "tail" => Ok(Since::Tail),
        n => n.parse::<u64>().map(Since::Offset).map_err(|_| {
            CliError::Usage(format!(
                "--since must be cursor, start, tail or a byte offset, not {n:?}"
            ))
        }),
    }
}

pub fn request(args: &TailArgs) -> Result<Subscribe, CliError> {
    let mut req = Subscribe {
        as_: identity::resolve(args.who.as_.as_deref())
            .map(|w| crate::line::uri(&w).map_err(|e| CliError::Usage(e.to_string())))
            .transpose()?,
        ack: Some(AckMode::Explicit),
        follow: Some(args.follow),
        kind: args.kind.clone(),
        since: args.since.as_deref().map(since_value).transpose()?,
        limit: args.limit.filter(|l| *l > 0),
        cursor: args.cursor.clone(),
        echo: args.echo.then_some(true),
        ..Default::default()
    };
    args.filters.apply(&mut req)?;
    Ok(req)
}

pub fn run(socket: &Path, args: TailArgs) -> Result<(), CliError> {
    let request = request(&args)?;
    let json_out = output::json_mode(args.json);
    // Signals are blocked before any thread starts, so only the watcher
    // receives them.
    let signals = if args.follow {
        Some(stop::block_signals()?)
    } else {
        None
    };
    let mut sub = Follow::open(socket, request, args.follow && !args.no_reconnect)?;
    if let Some(set) = signals {
        stop::watch_signals(set, sub.stopper())?;
        stop::watch_stdin(sub.stopper())?;
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 << 10, stdout.lock());
    // Offset of the newest event written to `out` and not yet acked.
    let mut pending: Option<u64> = None;
    loop {
        match sub.next_item()? {
            Item::Event { offset, event } => {
                let written = if json_out {
                    serde_json::to_writer(&mut out, &event)
                        .map_err(io::Error::other)
                        .and_then(|_| out.write_all(b"\n"))
                } else {
                    writeln!(out, "{}", output::event_row(&event))
                };
                if let Err(e) = written {
                    return broken_pipe(e);
                }
                pending = Some(offset);
                // Ack once nothing more is waiting: one flush and one ack
                // per burst.
                if sub.is_idle() {
                    if let Err(e) = out.flush() {
                        return broken_pipe(e);
                    }
                    if let Some(offset) = pending.take() {
                        sub.ack(offset);
                    }
                }
            }
            Item::Gap { missed, offset } => eprintln!(
                "metroctl: {missed} bytes of history were deleted by retention before this subscription read them; resuming at offset {offset}"
            ),
            Item::End { .. } => {
                if let Err(e) = out.flush() {
                    return broken_pipe(e);
                }
                if let Some(offset) = pending.take() {
                    sub.ack_and_wait(offset)?;
                }
                return Ok(());
            }
            Item::Lost { cause } => {
                if let Err(e) = out.flush() {
                    return broken_pipe(e);
                }
                // The next subscription starts after what was printed.
                pending = None;
                eprintln!(
                    "metroctl: lost metrod ({cause}); reconnecting, resuming at offset {}",
                    sub.position().unwrap_or(0)
                );
            }
            Item::Resumed { .. } => {}
            Item::AckRefused(e) => eprintln!("metroctl: ack refused: {e}"),
            Item::Stop(_) => {
                if let Err(e) = out.flush() {
                    return broken_pipe(e);
                }
                // Acking where we stand moves the cursor past everything
                // printed (and what the filters skipped) before we exit.
                if let Some(offset) = pending.take().or(sub.position()) {
                    sub.ack_and_wait(offset)?;
                }
                return Ok(());
            }
        }
    }
}

/// stdout went away (`| head`): stop quietly; what was not acked comes again.
fn broken_pipe(e: io::Error) -> Result<(), CliError> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(CliError::Io(e))
    }
}
