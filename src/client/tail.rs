//! `metroctl tail`: subscribe with explicit acks and acknowledge an event
//! only after it has been written (and flushed) to stdout, so a killed tail
//! loses nothing: what it had not printed is delivered again next time.

use std::io::{self, Write};
use std::path::Path;

use clap::Args;
use serde_json::{json, Value};

use super::conn::{answer, Connection};
use super::{identity, output, CliError, Identity};

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub who: Identity,
    /// Keep printing new events as they arrive.
    #[arg(short, long)]
    pub follow: bool,
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
    /// Only this kind.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Where to start: cursor | start | tail | <byte offset>.
    #[arg(long, value_name = "WHERE")]
    pub since: Option<String>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Also print events this identity wrote itself (hidden by default).
    #[arg(long)]
    pub echo: bool,
    /// Durable cursor name [default: the identity].
    #[arg(long, value_name = "NAME")]
    pub cursor: Option<String>,
    /// JSON lines even on a terminal.
    #[arg(long)]
    pub json: bool,
}

fn since_value(s: &str) -> Result<Value, CliError> {
    match s {
        "cursor" | "start" | "tail" => Ok(json!(s)),
        n => n.parse::<u64>().map(|n| json!(n)).map_err(|_| {
            CliError::Usage(format!(
                "--since must be cursor, start, tail or a byte offset, not {n:?}"
            ))
        }),
    }
}

pub fn request(args: &TailArgs) -> Result<Value, CliError> {
    let who = identity::resolve(args.who.as_.as_deref());
    let mut req = json!({"op": "subscribe", "ack": "explicit", "follow": args.follow});
    if let Some(w) = &who {
        req["as"] = json!(crate::line::uri(w).map_err(|e| CliError::Usage(e.to_string()))?);
    }
    let mode = if args.strict {
        Some("mine-only")
    } else if args.unclaimed {
        Some("unclaimed")
    } else if args.all {
        Some("all")
    } else {
        None
    };
    if let Some(m) = mode {
        req["mode"] = json!(m);
    }
    if args.include_webhooks {
        req["includeWebhooks"] = json!(true);
    }
    if let Some(c) = &args.chat {
        req["chat"] = json!(crate::line::line(c).map_err(|e| CliError::Usage(e.to_string()))?);
    }
    if let Some(s) = &args.station {
        req["station"] = json!(s);
    }
    if let Some(k) = &args.kind {
        req["kind"] = json!(k);
    }
    if let Some(s) = &args.since {
        req["since"] = since_value(s)?;
    }
    if let Some(l) = args.limit {
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
    let mut conn = Connection::open(socket)?;
    let sub_req = conn.send(request)?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 << 10, stdout.lock());
    let mut sub: Option<String> = None;
    // Offset of the newest event written to `out` and not yet acked.
    let mut pending: Option<u64> = None;
    let mut final_ack: Option<u64> = None;
    loop {
        let Some(frame) = conn.read()? else {
            out.flush().map_err(CliError::Io)?;
            return Err(CliError::Protocol("metrod closed the connection".into()));
        };
        if frame.get("ok").is_some() {
            let req = frame.get("req").and_then(Value::as_u64);
            if req == Some(sub_req) {
                let a = answer(frame)?;
                sub = a["sub"].as_str().map(String::from);
            } else if let Err(e) = answer(frame) {
                eprintln!("metroctl: ack refused: {e}");
            }
            if req.is_some() && req == final_ack {
                return Ok(());
            }
            continue;
        }
        let Some(sub_id) = sub.clone() else { continue };
        if frame["sub"].as_str() != Some(sub_id.as_str()) {
            continue;
        }
        if frame["gap"] == json!(true) {
            eprintln!(
                "metroctl: {} bytes of history were deleted by retention before this subscription read them; resuming at offset {}",
                frame["missed"], frame["offset"]
            );
            continue;
        }
        if frame["end"] == json!(true) {
            if let Err(e) = out.flush() {
                return broken_pipe(e);
            }
            match pending.take() {
                Some(offset) => {
                    final_ack =
                        Some(conn.send(json!({"op": "ack", "sub": sub_id, "offset": offset}))?);
                }
                None => return Ok(()),
            }
            continue;
        }
        let event = &frame["event"];
        let written = if json_out {
            serde_json::to_writer(&mut out, event)
                .map_err(io::Error::other)
                .and_then(|_| out.write_all(b"\n"))
        } else {
            writeln!(out, "{}", output::event_row(event))
        };
        if let Err(e) = written {
            return broken_pipe(e);
        }
        pending = frame["offset"].as_u64().or(pending);
        // Ack once nothing more is waiting: one flush and one ack per burst.
        if !conn.has_buffered() {
            if let Err(e) = out.flush() {
                return broken_pipe(e);
            }
            if let Some(offset) = pending.take() {
                conn.send(json!({"op": "ack", "sub": sub_id, "offset": offset}))?;
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
