//! Every `metroctl` command that is one request and one answer and has no
//! file of its own (`hello`, `claim`, `release`, `claims`, `history`,
//! `lines`, `stations`, `stats`, `cursor`, `publish`), and the dispatch of
//! all the others to their files.

use std::path::Path;

use clap::Args;
use serde_json::{json, Value};

use super::args::{event_arg, line_arg, text_arg, uri_arg};
use super::conn::{self, Connection};
use super::output::{fields_only, paint, print_json, style};
use super::{
    doctor, identity, mcp, messages, output, service, setup, tail, tunnel, webhook, CliError,
    Command, Json,
};
use crate::proto::{self, Request};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Most entries to print (1..1000).
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
    /// Only this line (e.g. telegram/42).
    #[arg(long, value_name = "LINE")]
    pub line: Option<String>,
    /// Only this station (telegram, discord, webhook, or an agent station
    /// such as claude).
    #[arg(long, value_name = "NAME")]
    pub station: Option<String>,
    /// Only this kind (inbound, outbound, edit, react, notify, callback, …).
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Only what this identity wrote (a metro URI, e.g. telegram/user/42).
    #[arg(long, value_name = "URI")]
    pub from: Option<String>,
    /// Case-insensitive substring of the text.
    #[arg(long)]
    pub text: Option<String>,
    /// Only entries at or after this time: a duration back from now (10m,
    /// 2h, 3d) or an RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Print JSON even on a terminal (piped output is JSON already).
    #[arg(long)]
    pub json: bool,
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

/// A printer: `f` on a terminal, the answer's fields as JSON otherwise.
fn human(f: impl Fn(&Value) + 'static) -> Printer {
    Box::new(move |a| {
        if output::json_mode(false) {
            print_json(&fields_only(a));
        } else {
            f(a)
        }
    })
}

fn print_hello(a: &Value) {
    output::say(format!(
        "{} {} · protocol {} · state dir {}",
        paint(style::BOLD, a["server"].as_str().unwrap_or("metrod")),
        a["version"].as_str().unwrap_or("?"),
        a["protocol"],
        a["stateDir"].as_str().unwrap_or("?")
    ));
    let ops: Vec<&str> = a["ops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    output::say(paint(
        style::DIM,
        format!(
            "{}: {}",
            output::count(ops.len() as u64, "op"),
            ops.join(", ")
        ),
    ));
}

fn print_cursor(a: &Value) {
    let name = a["cursor"].as_str().unwrap_or("?");
    let offset = a["offset"].as_u64().unwrap_or(0);
    let end = a["end"].as_u64().unwrap_or(offset);
    let behind = end.saturating_sub(offset);
    let stored = if a["stored"] == json!(true) {
        ""
    } else {
        " (not stored yet: it starts at the end of the log)"
    };
    let lag = if behind == 0 {
        paint(style::GOOD, "up to date")
    } else {
        paint(style::WARN, format!("{} behind", output::bytes(behind)))
    };
    output::say(format!(
        "cursor {}: offset {offset} of {end}, {lag}{stored}",
        paint(style::BOLD, name)
    ));
}

fn print_published(a: &Value) {
    let again = if a["duplicate"] == json!(true) {
        " (a retry: it was published before)"
    } else {
        ""
    };
    output::say(format!(
        "published {} at offset {}{again}",
        paint(style::ID, a["id"].as_str().unwrap_or("?")),
        a["offset"]
    ));
}

/// One `stations` row: a glyph, the name, the status.
fn station_row(s: &Value) -> Vec<String> {
    let status = s["status"].as_str().unwrap_or("");
    let glyph = if s["enabled"] != json!(true) {
        paint(style::DIM, "·")
    } else if status == "ok" {
        output::good()
    } else {
        output::bad()
    };
    let mut words = status.to_string();
    if status == "ok" {
        if let Some(bot) = s["bot"].as_str() {
            words.push_str(&format!(" ({bot})"));
        }
        if let Some(url) = s["url"].as_str() {
            words.push_str(&format!(", listening on {url}"));
        }
    }
    vec![glyph, s["name"].as_str().unwrap_or("").to_string(), words]
}

/// `stats` for people: the daemon in one line, then subscriptions,
/// cursors and config.
fn print_stats(a: &Value) {
    let n = |k: &str| a[k].as_u64().unwrap_or(0);
    output::say(format!(
        "up {} · log {} · {} · fsync {} · {}",
        output::duration(n("uptimeMs")),
        output::bytes(n("logBytes")),
        output::count(n("connections"), "connection"),
        a["fsync"].as_str().unwrap_or("?"),
        output::count(n("claims"), "claim"),
    ));
    let cell = |v: &Value| match v {
        Value::String(v) => output::short(v).to_string(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    let subs = a["subscriptions"].as_array().cloned().unwrap_or_default();
    output::say("");
    if subs.is_empty() {
        output::say(paint(style::DIM, "no subscriptions"));
    } else {
        let rows: Vec<Vec<String>> = subs
            .iter()
            .map(|s| {
                vec![
                    cell(&s["conn"]),
                    cell(&s["sub"]),
                    cell(&s["as"]),
                    cell(&s["mode"]),
                    cell(&s["ack"]),
                    output::bytes(s["lag"].as_u64().unwrap_or(0)),
                    cell(&s["unacked"]),
                    match s["oldestUnackedMs"].as_u64() {
                        Some(ms) => output::duration(ms),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        output::say(output::table(
            &[
                "CONN", "SUB", "AS", "MODE", "ACK", "LAG", "UNACKED", "OLDEST",
            ],
            &rows,
        ));
    }
    let cursors = a["cursors"].as_array().cloned().unwrap_or_default();
    output::say("");
    if cursors.is_empty() {
        output::say(paint(style::DIM, "no durable cursors"));
    } else {
        let rows: Vec<Vec<String>> = cursors
            .iter()
            .map(|c| {
                vec![
                    cell(&c["name"]),
                    cell(&c["offset"]),
                    match c["lag"].as_u64() {
                        Some(0) => "up to date".into(),
                        Some(l) => format!("{} behind", output::bytes(l)),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        output::say(output::table(&["CURSOR", "OFFSET", "LAG"], &rows));
    }
    let c = &a["config"];
    if c.is_object() {
        output::say("");
        output::say(format!(
            "config {} · loaded {} · {}",
            c["path"].as_str().unwrap_or("?"),
            c["loadedAt"].as_str().unwrap_or("never"),
            output::count(c["reloads"].as_u64().unwrap_or(0), "reload"),
        ));
        if let Some(e) = c["error"].as_str() {
            output::say(format!("{} config error: {e}", output::bad()));
        }
        for name in ["telegram", "discord"] {
            let st = &c[name];
            if !st.is_object() {
                continue;
            }
            let token = if st["token"] == json!(true) {
                "token set"
            } else {
                "no token"
            };
            let allow = if st["allowEveryone"] == json!(true) {
                "everyone allowed".to_string()
            } else {
                format!(
                    "{} allowed",
                    output::count(st["allow"].as_u64().unwrap_or(0), "user")
                )
            };
            output::say(format!("  {name}: {token}, {allow}"));
        }
        let m = &c["monitor"];
        if m.is_object() {
            output::say(format!(
                "  monitor: {}",
                if m["token"] == json!(true) {
                    "on"
                } else {
                    "off (no token)"
                }
            ));
        }
    }
}

fn build(command: Command) -> Result<(Request, Printer), CliError> {
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
            human(print_hello),
        ),
        Command::Claim { line, who, if_free } => {
            let line = line_arg(&line)?;
            let who = identity::resolve(who.as_.as_deref()).ok_or_else(|| {
                CliError::Usage(
                    "claim needs an identity: --as, $METRO_AS or an agent environment".into(),
                )
            })?;
            (
                Request::Claim(proto::Claim {
                    line,
                    as_: uri_arg(&who)?,
                    if_free: Some(if_free),
                    ephemeral: None,
                }),
                human(|a| {
                    output::say(format!(
                        "claimed {} → {}",
                        paint(style::BOLD, a["line"].as_str().unwrap_or_default()),
                        a["owner"].as_str().unwrap_or_default()
                    ))
                }),
            )
        }
        Command::Release { line } => (
            Request::Release(proto::Release {
                line: line_arg(&line)?,
            }),
            human(|a| {
                let line = a["line"].as_str().unwrap_or_default();
                if a["released"] == json!(true) {
                    output::say(format!("released {line}"));
                } else {
                    output::say(format!("{line} was not claimed"));
                }
            }),
        ),
        Command::Claims {
            json: Json { json },
        } => (
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
                    if rows.is_empty() {
                        output::note("no line is claimed");
                    } else {
                        output::say(output::table(&["LINE", "OWNER"], &rows));
                    }
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
                since: h
                    .since
                    .as_deref()
                    .map(super::since::time)
                    .transpose()?
                    .flatten(),
            });
            let json = h.json;
            (
                req,
                Box::new(move |a| {
                    let entries = a["entries"].as_array().cloned().unwrap_or_default();
                    if output::json_mode(json) {
                        entries.iter().for_each(print_json);
                        return;
                    }
                    if entries.is_empty() {
                        output::note("no entries match");
                        return;
                    }
                    let rows = output::EventRows::new(false);
                    output::say(rows.header());
                    for e in &entries {
                        output::say(rows.row(e));
                    }
                }),
            )
        }
        Command::Lines {
            json: Json { json },
        } => (
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
                        let s = |k: &str| l[k].as_str().unwrap_or("-").to_string();
                        let last = l["lastTs"]
                            .as_str()
                            .map(output::ago)
                            .unwrap_or_else(|| "-".into());
                        vec![
                            output::short(&s("line")).to_string(),
                            s("station"),
                            s("name"),
                            last,
                            output::short(&s("owner")).to_string(),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    output::note("no line seen yet");
                    return;
                }
                output::say(output::table(
                    &["LINE", "STATION", "NAME", "LAST", "OWNER"],
                    &rows,
                ));
            }),
        ),
        Command::Stations {
            json: Json { json },
        } => (
            Request::Stations,
            Box::new(move |a| {
                let st = a["stations"].as_array().cloned().unwrap_or_default();
                if output::json_mode(json) {
                    st.iter().for_each(print_json);
                    return;
                }
                let rows: Vec<Vec<String>> = st.iter().map(station_row).collect();
                output::say(output::table(&["", "STATION", "STATUS"], &rows));
            }),
        ),
        Command::Stats {
            json: Json { json },
        } => (
            Request::Stats,
            Box::new(move |a| {
                let a = fields_only(a);
                if output::json_mode(json) {
                    print_json(&a);
                } else {
                    print_stats(&a);
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
            (Request::Cursor(req), human(print_cursor))
        }
        Command::Publish { event } => {
            let event = event_arg(&text_arg(event)?)?;
            (
                Request::Publish(proto::Publish {
                    event,
                    idempotency_key: None,
                }),
                human(print_published),
            )
        }
    })
}
