//! `metroctl status` (alias `whoami`): who this shell acts as and why, the
//! daemon (version, uptime, state dir, pid), each station in a word, the
//! identity's claims, and its cursor with how far behind the log end it is.
//! Read-only: `hello`, `stats`, `stations`, `claims` and `cursor`, nothing
//! that moves a cursor or claims a line.

use std::path::Path;

use clap::Args;
use serde_json::{json, Value};

use super::conn::Connection;
use super::{identity, output, CliError, Identity};
use crate::proto::{CursorQuery, Hello, Request};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub who: Identity,
    /// JSON even on a terminal.
    #[arg(long)]
    pub json: bool,
}

fn call(conn: &mut Connection, request: Request) -> Result<Value, CliError> {
    conn.call(&request)
}

pub fn run(socket: &Path, args: StatusArgs) -> Result<(), CliError> {
    let me = identity::resolve(args.who.as_.as_deref())
        .map(|a| crate::line::uri(&a).map_err(|e| CliError::Usage(format!("--as: {e}"))))
        .transpose()?;
    let mut report = json!({
        "as": me,
        "asFrom": identity::source(args.who.as_.as_deref()),
        "socket": socket.display().to_string(),
    });
    let reached = Connection::open(socket).and_then(|mut conn| gather(&mut conn, me.as_deref()));
    let result = match reached {
        Ok(daemon) => {
            for (k, v) in daemon {
                report[k] = v;
            }
            Ok(())
        }
        Err(e @ CliError::NotRunning { .. }) => {
            report["daemon"] = json!({"running": false});
            Err(e)
        }
        Err(e) => return Err(e),
    };
    if output::json_mode(args.json) {
        println!("{report}");
    } else {
        print!("{}", human(&report));
    }
    result
}

/// The daemon's part of the report: `daemon`, `stations`, `claims`, `cursor`.
fn gather(conn: &mut Connection, me: Option<&str>) -> Result<Vec<(&'static str, Value)>, CliError> {
    let hello = call(
        conn,
        Request::Hello(Hello {
            client: Some("metroctl status".into()),
        }),
    )?;
    let stats = call(conn, Request::Stats)?;
    let stations = call(conn, Request::Stations)?;
    let state_dir = hello["stateDir"].as_str().unwrap_or("");
    let pid = std::fs::read_to_string(Path::new(state_dir).join("metrod.lock"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    let daemon = json!({
        "running": true,
        "version": hello["version"],
        "uptimeMs": stats["uptimeMs"],
        "stateDir": state_dir,
        "pid": pid,
        "logBytes": stats["logBytes"],
    });
    let stations: Vec<Value> = stations["stations"]
        .as_array()
        .map(|a| a.iter().map(station).collect())
        .unwrap_or_default();
    let mut out = vec![("daemon", daemon), ("stations", json!(stations))];
    let Some(me) = me else {
        return Ok(out);
    };
    let claims = call(conn, Request::Claims)?;
    let mine: Vec<&String> = claims["claims"]
        .as_object()
        .map(|m| m.iter().filter(|(_, o)| *o == me).map(|(l, _)| l).collect())
        .unwrap_or_default();
    out.push(("claims", json!(mine)));
    let cursor = call(
        conn,
        Request::Cursor(CursorQuery {
            as_: Some(me.to_string()),
            cursor: None,
        }),
    )?;
    let (offset, end) = (
        cursor["offset"].as_u64().unwrap_or(0),
        cursor["end"].as_u64().unwrap_or(0),
    );
    out.push((
        "cursor",
        json!({
            "name": cursor["cursor"],
            "stored": cursor["stored"],
            "offset": offset,
            "end": end,
            "behind": end.saturating_sub(offset),
        }),
    ));
    Ok(out)
}

/// A station row reduced to its name and a word: `ok`, `off`, `down`,
/// `standby` (in a cluster: another node runs it), … (the word before the
/// status's first `:`), with the full status and, in a cluster, the node
/// that runs it beside.
fn station(row: &Value) -> Value {
    let status = row["status"].as_str().unwrap_or("");
    let word = if status.starts_with("standby") {
        "standby"
    } else if row["enabled"] == json!(false) {
        "off"
    } else {
        status.split(':').next().unwrap_or(status).trim()
    };
    let mut out = json!({"name": row["name"], "word": word, "status": status});
    if let Some(node) = row.get("node") {
        out["node"] = node.clone();
    }
    out
}

fn human(r: &Value) -> String {
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<9} {v}\n"));
    let from = r["asFrom"].as_str().unwrap_or("");
    match r["as"].as_str() {
        Some(me) => row("as", format!("{me}  (from {from})")),
        None => row(
            "as",
            format!("nobody — {from}; pass --as or set $METRO_AS to act as an agent"),
        ),
    }
    let d = &r["daemon"];
    if d["running"] != json!(true) {
        row(
            "metrod",
            format!(
                "not running (no answer on {})",
                r["socket"].as_str().unwrap_or("")
            ),
        );
        return out;
    }
    let pid = d["pid"]
        .as_u64()
        .map(|p| format!(", pid {p}"))
        .unwrap_or_default();
    row(
        "metrod",
        format!(
            "{}, up {}{pid}",
            d["version"].as_str().unwrap_or("?"),
            super::output::duration(d["uptimeMs"].as_u64().unwrap_or(0)),
        ),
    );
    row("state", d["stateDir"].as_str().unwrap_or("").to_string());
    let stations: Vec<String> = r["stations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let node = s["node"]
                        .as_str()
                        .map(|n| format!(" (node {n})"))
                        .unwrap_or_default();
                    format!(
                        "{} {}{node}",
                        s["name"].as_str().unwrap_or(""),
                        s["word"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    row("stations", stations.join(", "));
    if r["as"].is_null() {
        return out;
    }
    let claims: Vec<&str> = r["claims"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    row(
        "claims",
        if claims.is_empty() {
            "none".into()
        } else {
            claims.join(", ")
        },
    );
    let c = &r["cursor"];
    let behind = c["behind"].as_u64().unwrap_or(0);
    let offset = c["offset"].as_u64().unwrap_or(0);
    row(
        "cursor",
        match (c["stored"] == json!(true), behind) {
            (false, _) => format!(
                "none stored yet: `metroctl tail` starts at the beginning ({} of log)",
                super::output::bytes(behind)
            ),
            (true, 0) => format!("offset {offset}, up to date"),
            (true, b) => format!(
                "offset {offset}, {} behind the log end",
                super::output::bytes(b)
            ),
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(super::output::duration(12_400), "12 s");
        assert_eq!(super::output::duration(600_000), "10 min");
        assert_eq!(
            super::output::duration(3_600_000 * 3 + 300_000),
            "3 h 5 min"
        );
        assert_eq!(super::output::duration(86_400_000 * 2), "2 days");
        assert_eq!(super::output::bytes(512), "512 bytes");
        assert_eq!(super::output::bytes(4096), "4.0 KiB");
        assert_eq!(
            station(&json!({"name": "discord", "enabled": true, "status": "down: 401"}))["word"],
            "down"
        );
        assert_eq!(
            station(
                &json!({"name": "telegram", "enabled": false, "status": "disabled: no bot token"})
            )["word"],
            "off"
        );
        let standby = station(&json!({
            "name": "telegram", "enabled": false, "status": "standby: runs on node a", "node": "a"
        }));
        assert_eq!(standby["word"], "standby");
        assert_eq!(standby["node"], "a");
    }
}
