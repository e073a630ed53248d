//! `metroctl tail`: subscribe with explicit acks and acknowledge an event
//! only after it has been written (and flushed) to stdout, so a killed tail
//! loses nothing: what it had not printed is delivered again next time.
//! With `--follow` it reads through [`Follow`] (reconnects when metrod
//! goes away) and stops cleanly on SIGINT, SIGTERM or the end of a piped
//! stdin ([`stop`]): flush, ack, exit 0.

use std::io::{self, Write};
use std::path::Path;

use clap::Args;
use serde_json::{json, Value};

use super::follow::{Follow, Item};
use super::{identity, output, stop, CliError, Identity};

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
    /// Where to start: cursor, start, tail, a byte offset, a duration back
    /// from now (10m, 2h, 3d) or an RFC 3339 time.
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
    pub fn apply(&self, req: &mut Value) -> Result<(), CliError> {
        let mode = if self.strict {
            Some("mine-only")
        } else if self.unclaimed {
            Some("unclaimed")
        } else if self.all {
            Some("all")
        } else {
            None
        };
        if let Some(m) = mode {
            req["mode"] = json!(m);
        }
        if self.include_webhooks {
            req["includeWebhooks"] = json!(true);
        }
        if let Some(c) = &self.chat {
            let line = crate::line::line(c).map_err(|e| CliError::Usage(format!("--chat: {e}")))?;
            req["chat"] = json!(line);
        }
        if let Some(s) = &self.station {
            req["station"] = json!(s);
        }
        Ok(())
    }
}

pub fn request(args: &TailArgs) -> Result<Value, CliError> {
    let who = identity::resolve(args.who.as_.as_deref());
    let mut req = json!({"op": "subscribe", "ack": "explicit", "follow": args.follow});
    if let Some(w) = &who {
        req["as"] = json!(crate::line::uri(w).map_err(|e| CliError::Usage(e.to_string()))?);
    }
    args.filters.apply(&mut req)?;
    if let Some(k) = &args.kind {
        req["kind"] = json!(k);
    }
    if let Some(s) = &args.since {
        req["since"] = json!(super::since::parse(s)?);
    }
    if let Some(l) = args.limit.filter(|l| *l > 0) {
        req["limit"] = json!(l);
    }
    if let Some(c) = &args.cursor {
        req["cursor"] = json!(c);
    }
    if args.echo {
        req["echo"] = json!(true);
    }
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
