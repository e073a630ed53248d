//! `metroctl tail`: subscribe with explicit acks and acknowledge an event
//! only after it has been written (and flushed) to stdout, so a killed tail
//! loses nothing: what it had not printed is delivered again next time.
//! With `--follow` it reads through [`Follow`] (reconnects when metrod
//! goes away) and stops cleanly on SIGINT, SIGTERM or the end of a piped
//! stdin ([`stop`]): flush, ack, exit 0.

use std::io::{self, Write};
use std::path::Path;

use super::conn::Connection;
use super::follow::{Follow, Item};
use super::{identity, output, stop, CliError, Identity};
use crate::proto::{AckMode, Mode, Request, Since, Subscribe};
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
    /// Print JSON lines even on a terminal (piped output is JSON already).
    #[arg(long)]
    pub json: bool,
    /// On a terminal: metro's full message ids and the whole text.
    #[arg(long)]
    pub wide: bool,
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

pub fn request(args: &TailArgs) -> Result<Subscribe, CliError> {
    let mut req = Subscribe {
        as_: identity::resolve(args.who.as_.as_deref())
            .map(|w| crate::line::uri(&w).map_err(|e| CliError::Usage(e.to_string())))
            .transpose()?,
        ack: Some(AckMode::Explicit),
        follow: Some(args.follow),
        kind: args.kind.clone(),
        since: args.since.as_deref().map(super::since::parse).transpose()?,
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
    let rows = (!json_out).then(|| event_rows(socket, args.wide));
    let from_cursor = matches!(request.since, None | Some(Since::Cursor))
        && (request.as_.is_some() || request.cursor.is_some());
    // Signals are blocked before any thread starts, so only the watcher
    // receives them.
    let signals = if args.follow {
        Some(stop::block_signals()?)
    } else {
        None
    };
    let what = following_what(&request);
    let mut sub = Follow::open(socket, request, args.follow && !args.no_reconnect)?;
    if let Some(set) = signals {
        stop::watch_signals(set, sub.stopper())?;
        stop::watch_stdin(sub.stopper())?;
        if !json_out {
            output::note(format!("following {what} (Ctrl-C to stop)"));
        }
    }
    let mut printed = false;
    // Human rows go through anstream: styles stay on a color terminal and
    // are stripped otherwise. JSON lines hold none: straight out.
    let sink: Box<dyn Write> = if json_out {
        Box::new(io::stdout().lock())
    } else {
        Box::new(anstream::stdout().lock())
    };
    let mut out = io::BufWriter::with_capacity(64 << 10, sink);
    // Offset of the newest event written to `out` and not yet acked.
    let mut pending: Option<u64> = None;
    loop {
        match sub.next_item()? {
            Item::Event { offset, event } => {
                let written = match &rows {
                    None => serde_json::to_writer(&mut out, &event)
                        .map_err(io::Error::other)
                        .and_then(|_| out.write_all(b"\n")),
                    Some(rows) if !printed => {
                        writeln!(out, "{}\n{}", rows.header(), rows.row(&event))
                    }
                    Some(rows) => writeln!(out, "{}", rows.row(&event)),
                };
                printed = true;
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
            Item::End { offset } => {
                if !printed && !json_out {
                    if from_cursor {
                        output::note(format!(
                            "no new events since your cursor (offset {offset})"
                        ));
                    } else {
                        output::note(format!("no events (offset {offset})"));
                    }
                }
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

/// The human rows, with webhook lines named by their labels (asked once).
fn event_rows(socket: &Path, wide: bool) -> output::EventRows {
    let rows = output::EventRows::new(wide);
    match Connection::open(socket).and_then(|mut c| c.call(&Request::WebhookList)) {
        Ok(a) => rows.with_webhooks(&a["endpoints"]),
        Err(_) => rows,
    }
}

/// What a following tail waits for, in words.
fn following_what(r: &Subscribe) -> String {
    let mut what = match (&r.as_, r.mode) {
        (_, Some(Mode::All)) | (None, None) => "every line".to_string(),
        (Some(who), Some(Mode::MineOnly)) => format!("the lines {} owns", output::short(who)),
        (_, Some(Mode::Unclaimed)) => "the lines nobody owns".to_string(),
        (Some(who), _) => format!(
            "the lines {} owns and those nobody owns",
            output::short(who)
        ),
        (None, _) => "every line".to_string(),
    };
    if let Some(c) = &r.chat {
        what = format!("{} only", output::short(c));
    }
    if let Some(s) = &r.station {
        what.push_str(&format!(" on station {s}"));
    }
    if let Some(k) = &r.kind {
        what.push_str(&format!(", kind {k}"));
    }
    what
}

/// stdout went away (`| head`): stop quietly; what was not acked comes again.
fn broken_pipe(e: io::Error) -> Result<(), CliError> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(CliError::Io(e))
    }
}
