//! Every `metroctl` command that is one request and one answer and has no
//! file of its own (`hello`, `claim`, `release`, `claims`, `history`,
//! `lines`, `stations`, `stats`, `cursor`, `publish`), and the dispatch of
//! all the others to their files.

use std::path::Path;

use clap::Args;
use serde_json::{json, Value};

use super::args::{event_arg, line_arg, text_arg, uri_arg};
use super::conn::{self, Connection};
use super::output::{fields_only, print_json};
use super::{
    doctor, identity, mcp, messages, output, service, setup, tail, tunnel, webhook, CliError,
    Command,
};
use crate::proto::{self, Request};

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
    /// Only entries at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(socket: &Path, command: Command) -> Result<(), CliError> {
    let command = match command {
        Command::Tail(args) => return tail::run(socket, args),
        Command::Top(args) => return super::top::run(socket, args),
        Command::Mcp(args) => return mcp::run(socket, args),
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
        Command::Send(args) => return messages::send(socket, args),
        Command::Reply(args) => return messages::reply(socket, args),
        Command::Edit(args) => return messages::edit(socket, args),
        Command::React(args) => return messages::react(socket, args),
        Command::Download(args) => return messages::download(socket, args),
        Command::Fetch(args) => return messages::fetch(socket, args),
        Command::Allow(args) => return messages::allow(socket, args),
        Command::Deny(args) => return messages::deny(socket, args),
        other => other,
    };
    let (request, printer) = build(command)?;
    // A publish carries an idempotency key and survives one dropped
    // connection.
    let answer = if matches!(request, Request::Publish(_)) {
        conn::call_once(socket, request)?
    } else {
        Connection::open(socket)?.call(&request)?
    };
    printer(&answer);
    Ok(())
}

type Printer = Box<dyn Fn(&Value)>;

fn plain() -> Printer {
    Box::new(|a| print_json(&fields_only(a)))
}

fn build(command: Command) -> Result<(Request, Printer), CliError> {
    Ok(match command {
        Command::Tail(_)
        | Command::Top(_)
        | Command::Mcp(_)
        | Command::Webhook(_)
        | Command::Tunnel(_)
        | Command::Doctor(_)
        | Command::Service(_)
        | Command::Setup(_)
        | Command::Completions { .. }
        | Command::Send(_)
        | Command::Reply(_)
        | Command::Edit(_)
        | Command::React(_)
        | Command::Download(_)
        | Command::Fetch(_)
        | Command::Allow(_)
        | Command::Deny(_) => {
            unreachable!("handled by run")
        }
        Command::Hello => (
            Request::Hello(proto::Hello {
                client: Some("metroctl".into()),
            }),
            plain(),
        ),
        Command::Claim { line, who, if_free } => {
            let who = identity::resolve(who.as_.as_deref()).ok_or_else(|| {
                CliError::Usage(
                    "claim needs an identity: --as, $METRO_AS or an agent environment".into(),
                )
            })?;
            (
                Request::Claim(proto::Claim {
                    line: line_arg(&line)?,
                    as_: uri_arg(&who)?,
                    if_free: Some(if_free),
                    ephemeral: None,
                }),
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
            Request::Release(proto::Release {
                line: line_arg(&line)?,
            }),
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
            Request::Claims,
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
        Command::History(h) => {
            let req = Request::History(proto::History {
                limit: Some(h.limit),
                line: h.line.as_deref().map(line_arg).transpose()?,
                station: h.station,
                kind: h.kind,
                from: h.from.as_deref().map(uri_arg).transpose()?,
                text: h.text,
                since: h.since,
            });
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
            Request::Lines,
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
            Request::Stations,
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
            Request::Stats,
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
                Some(c) => proto::CursorQuery {
                    as_: None,
                    cursor: Some(c),
                },
                None => {
                    let who = identity::resolve(who.as_.as_deref()).ok_or_else(|| {
                        CliError::Usage("cursor needs --as, --cursor or $METRO_AS".into())
                    })?;
                    proto::CursorQuery {
                        as_: Some(uri_arg(&who)?),
                        cursor: None,
                    }
                }
            };
            (Request::Cursor(req), plain())
        }
        Command::Publish { event } => {
            let event = event_arg(&text_arg(event)?)?;
            (
                Request::Publish(proto::Publish {
                    event,
                    idempotency_key: None,
                }),
                plain(),
            )
        }
    })
}
