//! Every `metroctl` command but `tail`: build the request, call, print.

use std::io::Read;
use std::path::Path;

use clap::Args;
use serde_json::{json, Value};

use super::conn::{self, Connection};
use super::{
    doctor, identity, mcp, messages, output, service, setup, tail, tunnel, webhook, CliError,
    Command,
};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Most entries to print (1..1000).
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
    #[arg(long, value_name = "LINE")]
    pub line: Option<String>,
    #[arg(long)]
    pub station: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long, value_name = "URI")]
    pub from: Option<String>,
    /// Case-insensitive substring of the text.
    #[arg(long)]
    pub text: Option<String>,
    /// Only entries at or after this time: a duration back from now (10m,
    /// 2h, 3d) or an RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn usage<E: std::fmt::Display>(e: E) -> CliError {
    CliError::Usage(e.to_string())
}

pub(super) fn line_arg(l: &str) -> Result<String, CliError> {
    crate::line::line(l).map_err(usage)
}

fn uri_arg(u: &str) -> Result<String, CliError> {
    crate::line::uri(u).map_err(usage)
}

pub(super) fn read_stdin() -> Result<String, CliError> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(CliError::Io)?;
    Ok(s)
}

pub(super) fn print_json(v: &Value) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

pub(super) fn no_claim(flag: bool) -> bool {
    flag || std::env::var("METRO_NO_AUTO_CLAIM").is_ok_and(|v| v == "1" || v == "true")
}

/// The actor of an outbound op: `--from`, else the identity.
pub(super) fn actor(from: Option<String>) -> Result<Option<String>, CliError> {
    identity::resolve(from.as_deref())
        .map(|a| uri_arg(&a))
        .transpose()
}

pub fn run(socket: &Path, command: Command) -> Result<(), CliError> {
    let command = match command {
        Command::Tail(args) => return tail::run(socket, args),
        Command::Top(args) => return super::top::run(socket, args),
        Command::Mcp(args) => return mcp::run(socket, args),
        Command::Status(args) => return super::status::run(socket, args),
        Command::Start(args) => return super::daemonctl::start(socket, args),
        Command::Stop => return super::daemonctl::stop(socket),
        Command::Webhook(cmd) => return webhook::run(socket, cmd),
        Command::Tunnel(cmd) => return tunnel::run(socket, cmd),
        Command::Doctor(args) => return doctor::run(socket, &args),
        Command::Service(cmd) => return service::run(socket, cmd),
        Command::Setup(args) => return setup::run(socket, args),
        Command::Completions { shell } => {
            let mut cmd = <super::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "metroctl", &mut std::io::stdout());
            return Ok(());
        }
        Command::Reply(args) => return messages::reply(socket, args),
        Command::Download(args) => return messages::download(socket, args),
        Command::Fetch(args) => return messages::fetch(socket, args),
        Command::Allow(args) => return messages::allow(socket, args),
        Command::Deny(args) => return messages::deny(socket, args),
        other => other,
    };
    let (request, printer) = build(command)?;
    // Writes carry an idempotency key and survive one dropped connection.
    let answer = if matches!(
        request["op"].as_str(),
        Some("send" | "edit" | "react" | "publish")
    ) {
        conn::call_once(socket, request.clone())?
    } else {
        Connection::open(socket)?.call(request.clone())?
    };
    printer(&answer);
    report_skipped_claim(socket, &request, &answer);
    Ok(())
}

/// After a `send`, `edit` or `react` whose auto-claim was skipped, says on
/// stderr who owns the line (as the TypeScript metro did).
pub(super) fn report_skipped_claim(socket: &Path, request: &Value, answer: &Value) {
    if answer["claim"] != json!("skipped") {
        return;
    }
    let line = request["line"].as_str().unwrap_or_default();
    let owner = match answer["owner"].as_str() {
        Some(o) => Some(o.to_string()),
        None => Connection::open(socket)
            .and_then(|mut c| c.call(json!({"op": "claims"})))
            .ok()
            .and_then(|c| c["claims"][line].as_str().map(String::from)),
    };
    eprintln!(
        "auto-claim skipped: line owned by {}",
        owner.as_deref().unwrap_or("someone else")
    );
}

/// `send` on a terminal: `notified L`, as the TypeScript metro said it.
pub(super) fn sent_printer(line: String) -> Printer {
    Box::new(move |a| {
        if output::json_mode(false) {
            print_json(&fields_only(a));
        } else {
            println!("notified {line}");
        }
    })
}

pub(super) type Printer = Box<dyn Fn(&Value)>;

pub(super) fn fields_only(a: &Value) -> Value {
    let mut a = a.clone();
    if let Some(m) = a.as_object_mut() {
        m.remove("req");
        m.remove("ok");
    }
    a
}

fn plain() -> Printer {
    Box::new(|a| print_json(&fields_only(a)))
}

fn build(command: Command) -> Result<(Value, Printer), CliError> {
    Ok(match command {
        Command::Tail(_)
        | Command::Top(_)
        | Command::Mcp(_)
        | Command::Status(_)
        | Command::Start(_)
        | Command::Stop
        | Command::Webhook(_)
        | Command::Tunnel(_)
        | Command::Doctor(_)
        | Command::Service(_)
        | Command::Setup(_)
        | Command::Completions { .. }
        | Command::Reply(_)
        | Command::Download(_)
        | Command::Fetch(_)
        | Command::Allow(_)
        | Command::Deny(_) => {
            unreachable!("handled by run")
        }
        Command::Hello => (json!({"op": "hello", "client": "metroctl"}), plain()),
        Command::Claim { line, who, if_free } => {
            let who = identity::resolve(who.as_.as_deref()).ok_or_else(|| {
                CliError::Usage(
                    "claim needs an identity: --as, $METRO_AS or an agent environment".into(),
                )
            })?;
            (
                json!({"op": "claim", "line": line_arg(&line)?, "as": uri_arg(&who)?, "ifFree": if_free}),
                Box::new(|a| {
                    if output::json_mode(false) {
                        print_json(&fields_only(a));
                    } else {
                        println!(
                            "claimed {} → {}",
                            a["line"].as_str().unwrap_or_default(),
                            a["owner"].as_str().unwrap_or_default()
                        );
                    }
                }),
            )
        }
        Command::Release { line } => (
            json!({"op": "release", "line": line_arg(&line)?}),
            Box::new(|a| {
                let line = a["line"].as_str().unwrap_or_default();
                if output::json_mode(false) {
                    print_json(&fields_only(a));
                } else if a["released"] == json!(true) {
                    println!("released {line}");
                } else {
                    println!("{line} was not claimed");
                }
            }),
        ),
        Command::Claims { json } => (
            json!({"op": "claims"}),
            Box::new(move |a| {
                if output::json_mode(json) {
                    print_json(&a["claims"]);
                } else {
                    let rows: Vec<Vec<String>> = a["claims"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(l, o)| vec![l.clone(), o.as_str().unwrap_or("").to_string()])
                                .collect()
                        })
                        .unwrap_or_default();
                    println!("{}", output::table(&["LINE", "OWNER"], &rows));
                }
                // Claims of local lines by other identities (older
                // claims.json): not in force, said on stderr.
                for (line, why) in a["ignored"].as_object().into_iter().flatten() {
                    eprintln!("ignored: {line}: {}", why["note"].as_str().unwrap_or(""));
                }
            }),
        ),
        Command::Send {
            line,
            text,
            from,
            no_claim: nc,
            reply_to,
            attach,
        } => {
            let text = if text == "-" { read_stdin()? } else { text };
            let line = line_arg(&line)?;
            let mut req =
                json!({"op": "send", "line": line, "text": text, "noClaim": no_claim(nc)});
            if let Some(f) = actor(from)? {
                req["from"] = json!(f);
            }
            if let Some(r) = reply_to {
                req["replyTo"] = json!(r);
            }
            attach.apply(&mut req)?;
            (req, sent_printer(line))
        }
        Command::Edit {
            line,
            message_id,
            text,
            from,
            no_claim: nc,
            buttons,
        } => {
            let text = if text == "-" { read_stdin()? } else { text };
            let mut req = json!({"op": "edit", "line": line_arg(&line)?, "messageId": message_id, "text": text, "noClaim": no_claim(nc)});
            if let Some(f) = actor(from)? {
                req["from"] = json!(f);
            }
            if let Some(b) = messages::buttons_arg(&buttons)? {
                req["buttons"] = b;
            }
            (req, plain())
        }
        Command::React {
            line,
            message_id,
            emoji,
            from,
            no_claim: nc,
        } => {
            let mut req = json!({"op": "react", "line": line_arg(&line)?, "messageId": message_id, "emoji": emoji, "noClaim": no_claim(nc)});
            if let Some(f) = actor(from)? {
                req["from"] = json!(f);
            }
            (req, plain())
        }
        Command::History(h) => {
            let mut req = json!({"op": "history", "limit": h.limit});
            if let Some(l) = &h.line {
                req["line"] = json!(line_arg(l)?);
            }
            if let Some(f) = &h.from {
                req["from"] = json!(uri_arg(f)?);
            }
            for (k, v) in [
                ("station", &h.station),
                ("kind", &h.kind),
                ("text", &h.text),
            ] {
                if let Some(v) = v {
                    req[k] = json!(v);
                }
            }
            if let Some(t) = h
                .since
                .as_deref()
                .map(super::since::time)
                .transpose()?
                .flatten()
            {
                req["since"] = json!(t);
            }
            let json = h.json;
            (
                req,
                Box::new(move |a| {
                    let entries = a["entries"].as_array().cloned().unwrap_or_default();
                    for e in &entries {
                        if output::json_mode(json) {
                            print_json(e);
                        } else {
                            println!("{}", output::event_row(e));
                        }
                    }
                }),
            )
        }
        Command::Lines { json } => (
            json!({"op": "lines"}),
            Box::new(move |a| {
                let lines = a["lines"].as_array().cloned().unwrap_or_default();
                if output::json_mode(json) {
                    lines.iter().for_each(print_json);
                    return;
                }
                let rows: Vec<Vec<String>> = lines
                    .iter()
                    .map(|l| {
                        ["line", "station", "name", "lastTs", "owner"]
                            .iter()
                            .map(|k| l[*k].as_str().unwrap_or("-").to_string())
                            .collect()
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(&["LINE", "STATION", "NAME", "LAST", "OWNER"], &rows)
                );
            }),
        ),
        Command::Stations { json } => (
            json!({"op": "stations"}),
            Box::new(move |a| {
                let st = a["stations"].as_array().cloned().unwrap_or_default();
                if output::json_mode(json) {
                    st.iter().for_each(print_json);
                    return;
                }
                let rows: Vec<Vec<String>> = st
                    .iter()
                    .map(|s| {
                        vec![
                            s["name"].as_str().unwrap_or("").to_string(),
                            if s["enabled"] == json!(true) {
                                "yes"
                            } else {
                                "no"
                            }
                            .to_string(),
                            s["status"].as_str().unwrap_or("").to_string(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(&["STATION", "ENABLED", "STATUS"], &rows)
                );
            }),
        ),
        Command::Stats { json } => (
            json!({"op": "stats"}),
            Box::new(move |a| {
                let a = fields_only(a);
                if output::json_mode(json) {
                    print_json(&a);
                    return;
                }
                println!(
                    "log {} bytes, up {} s, {} connections, fsync {}, {} claims",
                    a["logBytes"],
                    a["uptimeMs"].as_u64().unwrap_or(0) / 1000,
                    a["connections"],
                    a["fsync"].as_str().unwrap_or(""),
                    a["claims"]
                );
                let subs = a["subscriptions"].as_array().cloned().unwrap_or_default();
                let rows: Vec<Vec<String>> = subs
                    .iter()
                    .map(|s| {
                        [
                            "conn", "sub", "as", "mode", "ack", "offset", "cursor", "lag",
                            "unacked",
                        ]
                        .iter()
                        .map(|k| match &s[*k] {
                            Value::String(v) => v.clone(),
                            Value::Null => "-".into(),
                            v => v.to_string(),
                        })
                        .collect()
                    })
                    .collect();
                if !rows.is_empty() {
                    println!(
                        "{}",
                        output::table(
                            &[
                                "CONN", "SUB", "AS", "MODE", "ACK", "OFFSET", "CURSOR", "LAG",
                                "UNACKED"
                            ],
                            &rows
                        )
                    );
                }
            }),
        ),
        Command::Cursor { who, cursor } => {
            let req = match cursor {
                Some(c) => json!({"op": "cursor", "cursor": c}),
                None => {
                    let who = identity::resolve(who.as_.as_deref()).ok_or_else(|| {
                        CliError::Usage("cursor needs --as, --cursor or $METRO_AS".into())
                    })?;
                    json!({"op": "cursor", "as": uri_arg(&who)?})
                }
            };
            (req, plain())
        }
        Command::Publish { event } => {
            let text = if event == "-" { read_stdin()? } else { event };
            let event: Value = serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("publish needs a JSON object: {e}")))?;
            (json!({"op": "publish", "event": event}), plain())
        }
    })
}
