//! `metroctl doctor`: is everything in order, and if not, what to do.
//!
//! It asks the daemon (`hello`, `stations`, `stats`, `claims`) and looks at
//! the files itself: the state dir and socket permissions, free disk, each
//! station in words, the config file, log size and the oldest cursor's lag,
//! ignored claims (local lines claimed by another identity), the service
//! files, and the Cloudflare tunnel (when one is set up). Every
//! finding is `ok`, `info`, `warn` or `problem`; a problem names its fix.
//! Exit 0 when there is no problem (warnings included), 1 otherwise.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};

use super::conn::Connection;
use super::{output, service, setup, tunnel, CliError};
use crate::proto::Request;

#[derive(Debug, Args, Clone)]
pub struct DoctorArgs {
    /// Check only this Cloudflare tunnel: its name as given to `tunnel
    /// setup` (the config's file name) [default: every *.yml / *.yaml in
    /// the cloudflared dir]
    #[arg(value_name = "TUNNEL")]
    pub name: Option<String>,
    #[command(flatten)]
    pub dir: tunnel::ConfigDir,
    /// metro config file to check when metrod is not running [default: the
    /// one metrod reads, else $METRO_CONFIG, ~/.config/metro/config.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print JSON even on a terminal (piped output is JSON already).
    #[arg(long)]
    pub json: bool,
}

/// Free space below which the log cannot be trusted to grow.
const DISK_PROBLEM: u64 = 64 << 20;
/// Free space that deserves a warning.
const DISK_WARN: u64 = 512 << 20;
/// A cursor this far behind the end of the log deserves a warning.
const LAG_WARN: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Info,
    Warn,
    Problem,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Problem => "problem",
        }
    }
}

#[derive(Default)]
struct Report {
    checks: Vec<Value>,
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Report {
    fn add(&mut self, level: Level, area: &str, detail: impl Into<String>, fix: Option<String>) {
        let detail = detail.into();
        let line = match &fix {
            Some(f) => format!("{area}: {detail} — fix: {f}"),
            None => format!("{area}: {detail}"),
        };
        match level {
            Level::Problem => self.problems.push(line),
            Level::Warn => self.warnings.push(line),
            _ => {}
        }
        self.checks.push(json!({
            "area": area,
            "status": level.word(),
            "detail": detail,
            "fix": fix,
        }));
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 10 << 30 {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 10 << 20 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 10 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// What the daemon says, when it answers.
struct Daemon {
    hello: Value,
    stations: Vec<Value>,
    stats: Value,
    claims: Value,
}

fn ask(socket: &Path) -> Result<Daemon, CliError> {
    let mut c = Connection::open(socket)?;
    let hello = c.call(&Request::Hello(crate::proto::Hello {
        client: Some("metroctl doctor".into()),
    }))?;
    let stations = c.call(&Request::Stations)?;
    let stats = c.call(&Request::Stats)?;
    let claims = c.call(&Request::Claims)?;
    Ok(Daemon {
        hello,
        stations: stations["stations"].as_array().cloned().unwrap_or_default(),
        stats,
        claims,
    })
}

/// How to start metrod, given how it is installed.
fn start_hint(svc: &Value) -> String {
    if svc["installed"] == json!(true) {
        match svc["manager"].as_str() {
            Some("launchd") => format!(
                "launchctl kickstart gui/{}/{} (its log: ~/Library/Logs/metro/metrod.log)",
                nix::unistd::getuid().as_raw(),
                service::LAUNCHD_LABEL
            ),
            _ => "systemctl --user start metrod.socket metrod.service (why it stopped: journalctl --user -u metrod)".into(),
        }
    } else {
        "start it: `metrod` in a terminal, or install it as a service: `metroctl service install`"
            .into()
    }
}

fn check_daemon(r: &mut Report, socket: &Path, daemon: &Result<Daemon, CliError>, svc: &Value) {
    match daemon {
        Ok(d) => {
            let v = d.hello["version"].as_str().unwrap_or("?");
            let protocol = d.hello["protocol"].as_u64();
            if protocol != Some(crate::proto::PROTOCOL_VERSION as u64) {
                r.add(
                    Level::Problem,
                    "metrod",
                    format!(
                        "metrod {v} on {} speaks protocol {protocol:?}, this metroctl speaks {}",
                        socket.display(),
                        crate::proto::PROTOCOL_VERSION
                    ),
                    Some(
                        "install metrod and metroctl from the same release, then restart metrod"
                            .into(),
                    ),
                );
            } else {
                r.add(
                    Level::Ok,
                    "metrod",
                    format!("metrod {v} answers on {}", socket.display()),
                    None,
                );
            }
        }
        Err(e) => {
            let why = match e {
                CliError::NotRunning { cause, .. } => cause.to_string(),
                other => other.to_string(),
            };
            r.add(
                Level::Problem,
                "metrod",
                format!("metrod is not reachable at {} ({why})", socket.display()),
                Some(start_hint(svc)),
            );
        }
    }
}

fn check_state_dir(r: &mut Report, dir: &Path, running: bool) {
    let me = nix::unistd::geteuid().as_raw();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !running => r.add(
            Level::Info,
            "state dir",
            format!(
                "{} does not exist yet (metrod creates it, 0700)",
                dir.display()
            ),
            None,
        ),
        Err(e) => r.add(
            Level::Problem,
            "state dir",
            format!("cannot read {}: {e}", dir.display()),
            Some(format!(
                "check the path and its permissions: ls -ld {}",
                dir.display()
            )),
        ),
        Ok(m) if m.uid() != me => r.add(
            Level::Problem,
            "state dir",
            format!(
                "{} belongs to uid {}, not to you (uid {me})",
                dir.display(),
                m.uid()
            ),
            Some(format!("chown -R {me} {}", dir.display())),
        ),
        Ok(m) if m.mode() & 0o077 != 0 => r.add(
            Level::Problem,
            "state dir",
            format!(
                "{} is open to others (mode {:o}); it holds every message",
                dir.display(),
                m.mode() & 0o777
            ),
            Some(format!("chmod 700 {}", dir.display())),
        ),
        Ok(_) => r.add(
            Level::Ok,
            "state dir",
            format!("{} (0700, yours)", dir.display()),
            None,
        ),
    }
}

fn check_socket(r: &mut Report, socket: &Path, running: bool) {
    let me = nix::unistd::geteuid().as_raw();
    match std::fs::symlink_metadata(socket) {
        Err(_) if !running => {}
        Err(e) => r.add(
            Level::Problem,
            "socket",
            format!("cannot read {}: {e}", socket.display()),
            None,
        ),
        Ok(m) if !m.file_type().is_socket() => r.add(
            Level::Problem,
            "socket",
            format!("{} is not a socket", socket.display()),
            Some(format!(
                "move it away (metrod will not start on it): mv {0} {0}.old",
                socket.display()
            )),
        ),
        Ok(_) if !running => r.add(
            Level::Info,
            "socket",
            format!(
                "{} is left from a metrod that is gone (the next one replaces it)",
                socket.display()
            ),
            None,
        ),
        Ok(m) if m.uid() != me => r.add(
            Level::Problem,
            "socket",
            format!(
                "{} belongs to uid {}, not to you",
                socket.display(),
                m.uid()
            ),
            Some("stop that metrod and start your own".into()),
        ),
        Ok(m) if m.mode() & 0o077 != 0 => r.add(
            Level::Problem,
            "socket",
            format!(
                "{} has mode {:o}: others can try to connect (metrod refuses them)",
                socket.display(),
                m.mode() & 0o777
            ),
            Some(format!(
                "chmod 600 {} (metrod and metrod.socket create it 0600)",
                socket.display()
            )),
        ),
        Ok(_) => r.add(
            Level::Ok,
            "socket",
            format!("{} (0600)", socket.display()),
            None,
        ),
    }
}

fn check_disk(r: &mut Report, dir: &Path) {
    // The nearest existing ancestor: the dir may not exist yet.
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            return;
        }
    }
    match nix::sys::statvfs::statvfs(&probe) {
        Ok(vfs) => {
            // fsblkcnt_t is 32 bits on some systems (macOS).
            #[allow(clippy::unnecessary_cast)]
            let free = (vfs.blocks_available() as u64).saturating_mul(vfs.fragment_size() as u64);
            let what = format!("{} free on the state dir's file system", mib(free));
            if free < DISK_PROBLEM {
                r.add(
                    Level::Problem,
                    "disk",
                    what,
                    Some("free some space, or lower --retain-bytes / --retain-age so metrod deletes old segments".into()),
                );
            } else if free < DISK_WARN {
                r.add(
                    Level::Warn,
                    "disk",
                    what,
                    Some("free some space before the log fills it".into()),
                );
            } else {
                r.add(Level::Ok, "disk", what, None);
            }
        }
        Err(e) => r.add(
            Level::Warn,
            "disk",
            format!("cannot tell free space ({e})"),
            None,
        ),
    }
}

/// One station in words.
fn station_words(s: &Value) -> String {
    let status = s["status"].as_str().unwrap_or("?");
    let mut w = format!("{}: {status}", s["name"].as_str().unwrap_or("?"));
    if s["name"] == "webhook" {
        if let Some(l) = s["listen"].as_str() {
            // A listener that could not bind is not listening there.
            if status == "ok" {
                w.push_str(&format!(", listening on {l}"));
            } else {
                w.push_str(&format!(" (could not listen on {l})"));
            }
        }
        if let Some(n) = s["endpoints"].as_u64() {
            w.push_str(&format!(", {}", output::count(n, "endpoint")));
        }
    }
    w
}

/// The fix for a station that is enabled and not ok, from what its status
/// says went wrong.
fn station_fix(name: &str, status: &str) -> String {
    let has = |words: &[&str]| words.iter().any(|w| status.contains(w));
    if name == "webhook" {
        "free that port, or start metrod with another --webhook-addr (or $METRO_WEBHOOK_ADDR)"
            .to_string()
    } else if has(&["refused the bot token", "401", "Authentication failed"]) {
        format!("set a valid {name} bot token (`metroctl setup`), then restart metrod")
    } else if has(&["another program is polling"]) {
        "stop the other program polling this bot (another metrod, an old bridge); metrod retries by itself".to_string()
    } else if has(&["webhook set"]) {
        "remove the bot's webhook (the Bot API's deleteWebhook); metrod retries by itself"
            .to_string()
    } else if has(&["asks to wait", "429", "rate limit"]) {
        format!("nothing to do: {name} asked metrod to slow down; it retries by itself")
    } else if has(&["cannot reach", "connecting", "disconnected", "resuming"]) {
        format!(
            "check this machine's network and the {name} API URL (`metroctl stations` shows it); metrod reconnects by itself"
        )
    } else if has(&["is not the Bot API", "API_URL"]) {
        format!("check METRO_{}_API_URL", name.to_ascii_uppercase())
    } else if has(&["cannot store", "log"]) {
        "check the state dir's disk and permissions (see the disk and state checks); metrod retries by itself".to_string()
    } else {
        "metrod's log says more (`journalctl --user -u metrod`, or its stderr)".to_string()
    }
}

fn check_stations(r: &mut Report, stations: &[Value], config: Option<&Value>) {
    for s in stations {
        let name = s["name"].as_str().unwrap_or("?");
        let status = s["status"].as_str().unwrap_or("");
        let enabled = s["enabled"] == json!(true);
        let words = station_words(s);
        if enabled && status != "ok" {
            r.add(
                Level::Problem,
                "station",
                words,
                Some(station_fix(name, status)),
            );
        } else if !enabled && config.is_some_and(|c| c[name]["token"] == json!(true)) {
            r.add(
                Level::Warn,
                "station",
                format!("{words} — but the config has a {name} token"),
                Some(format!(
                    "metrod reads a new {name} token only at startup: restart metrod"
                )),
            );
        } else if enabled {
            r.add(Level::Ok, "station", words, None);
        } else {
            r.add(Level::Info, "station", words, None);
        }
    }
}

fn check_config(r: &mut Report, path: &Path, loaded: Option<&Value>) {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => r.add(
            Level::Info,
            "config",
            format!("no config file at {shown}: local agents and webhooks only"),
            Some("`metroctl setup` adds Telegram and Discord tokens".into()),
        ),
        Err(e) => r.add(
            Level::Problem,
            "config",
            format!("cannot read {shown}: {e}"),
            Some(format!("check its permissions: ls -l {shown}")),
        ),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => r.add(
            Level::Problem,
            "config",
            format!(
                "{shown} is readable or writable by others (mode {:o}) and holds tokens; metrod refuses it",
                m.permissions().mode() & 0o777
            ),
            Some(format!("chmod 600 {shown}")),
        ),
        Ok(_) => match crate::config::read_file(path) {
            Err(e) => r.add(
                Level::Problem,
                "config",
                e.to_string(),
                Some(format!("fix {shown} (or run `metroctl setup`, which rewrites it)")),
            ),
            Ok(c) => {
                r.add(Level::Ok, "config", format!("{shown} (0600, valid)"), None);
                for (name, st, check) in [
                    ("telegram", &c.telegram, setup::check_telegram_token as fn(&str) -> Result<(), String>),
                    ("discord", &c.discord, setup::check_discord_token),
                ] {
                    if let Some(t) = &st.token {
                        if let Err(e) = check(t) {
                            r.add(
                                Level::Warn,
                                "config",
                                format!("the {name} token does not look right: {e}"),
                                Some(format!("`metroctl setup --{name}-token -` and paste it again")),
                            );
                        }
                        if st.allow.is_empty() {
                            r.add(
                                Level::Warn,
                                "config",
                                format!("{name} has a token but an empty allowlist: nobody can reach your agents"),
                                Some(format!("`metroctl setup --allow-{name} <your user id>`")),
                            );
                        }
                    }
                }
            }
        },
    }
    if let Some(l) = loaded {
        if let Some(err) = l["error"].as_str() {
            r.add(
                Level::Problem,
                "config",
                format!(
                    "metrod rejected the last change ({}): {err}; it still runs on the config loaded at {}",
                    l["errorAt"].as_str().unwrap_or("?"),
                    l["loadedAt"].as_str().unwrap_or("startup")
                ),
                Some(format!("fix {shown}; metrod reloads it when it is saved")),
            );
        }
    }
}

fn check_log(r: &mut Report, stats: &Value) {
    let end = stats["logBytes"].as_u64().unwrap_or(0);
    let disk = stats["diskBytes"].as_u64().unwrap_or(end);
    let segments = stats["segments"].as_u64().unwrap_or(0);
    r.add(
        Level::Ok,
        "log",
        format!(
            "{} on disk (history.jsonl and {segments} rolled segment{}), end offset {end}",
            mib(disk),
            if segments == 1 { "" } else { "s" }
        ),
        None,
    );
    let oldest = stats["cursors"]
        .as_array()
        .into_iter()
        .flatten()
        .max_by_key(|c| c["lag"].as_u64().unwrap_or(0));
    match oldest {
        None => r.add(Level::Info, "cursors", "no durable cursors yet", None),
        Some(c) => {
            let lag = c["lag"].as_u64().unwrap_or(0);
            let name = c["name"].as_str().unwrap_or("?");
            let what = format!(
                "oldest cursor: {name}, {} behind the end of the log",
                mib(lag)
            );
            if lag >= LAG_WARN {
                r.add(
                    Level::Warn,
                    "cursors",
                    what,
                    Some(format!(
                        "if that agent is gone for good, remove its cursor file ({}) while metrod is stopped",
                        c["file"].as_str().unwrap_or("cursors/…")
                    )),
                );
            } else {
                r.add(Level::Ok, "cursors", what, None);
            }
        }
    }
}

/// Claims of local lines by other identities, left by an older claims.json:
/// ignored for routing, each with the command that removes it.
fn check_claims(r: &mut Report, claims: &Value) {
    let ignored = claims["ignored"].as_object();
    for (line, why) in ignored.into_iter().flatten() {
        r.add(
            Level::Warn,
            "claims",
            format!(
                "{} claims the local line {line}, which belongs to the agent it names: the claim is ignored",
                why["owner"].as_str().unwrap_or("?")
            ),
            Some(format!("`metroctl release {line}`")),
        );
    }
    if ignored.is_none_or(|m| m.is_empty()) {
        let n = claims["claims"].as_object().map_or(0, |m| m.len());
        r.add(Level::Ok, "claims", format!("{n} claim(s) in force"), None);
    }
}

/// `claims.json`: moved aside at startup (malformed), or a hand edit that
/// is not in force.
fn check_claims_file(r: &mut Report, stats: &Value) {
    let f = &stats["claimsFile"];
    if let Some(aside) = f["movedAside"].as_str() {
        r.add(
            Level::Problem,
            "claims",
            format!(
                "claims.json was malformed at startup: metrod moved it to {aside} and runs with no durable claims"
            ),
            Some(format!(
                "fix {aside} and copy it back to claims.json in the state dir; metrod picks it up while running"
            )),
        );
    }
    if let Some(err) = f["error"].as_str() {
        r.add(
            Level::Problem,
            "claims",
            format!(
                "a hand edit of claims.json is not valid ({}): {err}; the claims in force stay and \
                 metrod refuses durable claim changes until it is fixed",
                f["errorAt"].as_str().unwrap_or("?")
            ),
            Some("fix claims.json (a JSON object of line -> owner)".into()),
        );
    }
}

/// Another process appending to `history.jsonl` (a TypeScript metro still
/// running).
fn check_foreign_writer(r: &mut Report, stats: &Value) {
    let w = &stats["foreignWriter"];
    let adopted = w["adoptedLines"].as_u64().unwrap_or(0);
    let ended = w["endedTails"].as_u64().unwrap_or(0);
    if adopted + ended > 0 {
        r.add(
            Level::Warn,
            "log",
            format!(
                "another process appended to history.jsonl while metrod ran: {adopted} lines adopted, {ended} torn lines ended"
            ),
            Some("stop the other writer (a TypeScript metro still running?)".into()),
        );
    }
}

/// A node of a cluster (docs/cluster.md): its connection to NATS, the
/// unpublished backlog, the consumer's lag.
fn check_cluster(r: &mut Report, stats: &Value) {
    let c = &stats["cluster"];
    if !c.is_object() {
        return;
    }
    let node = c["node"].as_str().unwrap_or("?");
    let url = c["url"].as_str().unwrap_or("?");
    let backlog = c["unpublishedBytes"].as_u64().unwrap_or(0);
    let lag = c["consumerPending"].as_u64().unwrap_or(0);
    let seen = c["nodesSeen"].as_object().map_or(0, |m| m.len());
    let err = c["lastError"].as_str().unwrap_or("none");
    if c["connection"] != json!("connected") {
        r.add(
            Level::Problem,
            "cluster",
            format!(
                "node {node} cannot reach NATS at {url} ({}); local work goes on, {} of events wait to be published; last error: {err}",
                c["connection"].as_str().unwrap_or("?"),
                mib(backlog)
            ),
            Some("start the NATS server, or check [cluster] url and credentials".into()),
        );
    } else if c["ready"] != json!(true) {
        r.add(
            Level::Problem,
            "cluster",
            format!("node {node} is connected to {url} but the stream or the claims bucket is not set up: {err}"),
            Some("check that the server runs JetStream (nats-server -js) and the user may create streams".into()),
        );
    } else {
        r.add(
            Level::Ok,
            "cluster",
            format!(
                "node {node} connected to {url}; {seen} other nodes seen; {} unpublished; {lag} events not yet received{}",
                mib(backlog),
                runs(c)
            ),
            None,
        );
    }
}

/// Which node runs each one-node station (`stats.cluster.stations`), as
/// `; telegram on node a, discord on node b`.
fn runs(c: &Value) -> String {
    let Some(m) = c["stations"].as_object().filter(|m| !m.is_empty()) else {
        return String::new();
    };
    let list: Vec<String> = m
        .iter()
        .map(|(station, node)| format!("{station} on node {}", node.as_str().unwrap_or("?")))
        .collect();
    format!("; {}", list.join(", "))
}

fn check_service(r: &mut Report, svc: &Value) {
    if svc["installed"] == json!(true) {
        let enabled = match svc["enabled"].as_bool() {
            Some(true) => ", enabled",
            Some(false) => ", not enabled",
            None => "",
        };
        let m = svc["metrod"].as_str().unwrap_or("?");
        if svc["metrodExists"] == json!(false) {
            r.add(
                Level::Problem,
                "service",
                format!(
                    "the {} service runs {m}, which does not exist",
                    svc["manager"].as_str().unwrap_or("")
                ),
                Some("`metroctl service install` again (or with --metrod PATH)".into()),
            );
        } else {
            r.add(
                Level::Ok,
                "service",
                format!(
                    "{} service installed{enabled}, runs {m}",
                    svc["manager"].as_str().unwrap_or("")
                ),
                None,
            );
        }
    } else {
        r.add(
            Level::Info,
            "service",
            "not installed as a service",
            Some("`metroctl service install` runs metrod at login".into()),
        );
    }
}

pub fn run(socket: &Path, args: &DoctorArgs) -> Result<(), CliError> {
    let mut r = Report::default();
    let daemon = ask(socket);
    let svc = service::status(socket, &service::Target::default());
    check_daemon(&mut r, socket, &daemon, &svc);
    let d = daemon.as_ref().ok();
    let running = d.is_some();
    let state_dir = d
        .and_then(|d| d.hello["stateDir"].as_str())
        .map(PathBuf::from)
        .unwrap_or_else(crate::paths::state_dir);
    check_state_dir(&mut r, &state_dir, running);
    check_socket(&mut r, socket, running);
    check_disk(&mut r, &state_dir);
    let loaded = d
        .and_then(|d| d.stats.get("config"))
        .filter(|c| c.is_object());
    if let Some(d) = d {
        check_stations(&mut r, &d.stations, loaded);
    }
    let config_path = loaded
        .and_then(|c| c["path"].as_str())
        .map(PathBuf::from)
        .or_else(|| args.config.clone())
        .unwrap_or_else(crate::config::path);
    check_config(&mut r, &config_path, loaded);
    if let Some(d) = d {
        check_log(&mut r, &d.stats);
        check_claims(&mut r, &d.claims);
        check_claims_file(&mut r, &d.stats);
        check_foreign_writer(&mut r, &d.stats);
        check_cluster(&mut r, &d.stats);
    }
    check_service(&mut r, &svc);

    // The tunnel matters only once one is set up.
    let t = tunnel::check(
        socket,
        &tunnel::CheckArgs {
            name: args.name.clone(),
            dir: args.dir.clone(),
            json: true,
        },
        false,
    );
    let configs = t["configs"].as_array().cloned().unwrap_or_default();
    if configs.is_empty() {
        r.add(
            Level::Info,
            "tunnel",
            "no Cloudflare tunnel set up: webhooks are reachable from this machine only",
            Some("`metroctl tunnel setup` when a service on the internet must reach them".into()),
        );
    } else {
        let problems: Vec<String> = t["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        if problems.is_empty() {
            r.add(
                Level::Ok,
                "tunnel",
                format!("{} tunnel config(s) check out", configs.len()),
                None,
            );
        }
        for p in problems {
            r.add(Level::Problem, "tunnel", p, None);
        }
    }

    let mut report = json!({
        "ok": r.problems.is_empty(),
        "checks": r.checks,
        "problems": r.problems,
        "warnings": r.warnings,
        "daemon": match d {
            Some(d) => json!({
                "socket": socket.display().to_string(),
                "version": d.hello["version"],
                "stateDir": state_dir.display().to_string(),
                "webhook": d.stations.iter().find(|s| s["name"] == "webhook").cloned().unwrap_or(Value::Null),
            }),
            None => json!({
                "socket": socket.display().to_string(),
                "error": daemon.as_ref().err().map(|e| e.to_string()),
            }),
        },
        "service": svc,
        "cloudflared": t["cloudflared"],
        "configs": configs,
    });
    if let Some(c) = loaded {
        report["config"] = c.clone();
    }
    print(&report, args.json);
    super::output::problems_found(&report)
}

fn print(report: &Value, json: bool) {
    if output::json_mode(json) {
        println!("{report}");
        return;
    }
    use output::{paint, style};
    for c in report["checks"].as_array().into_iter().flatten() {
        let status = c["status"].as_str().unwrap_or("");
        let glyph = match status {
            "ok" => output::good(),
            "problem" => output::bad(),
            "warn" => output::warn(),
            _ => paint(style::DIM, "·"),
        };
        output::say(format!(
            "{glyph} {:<10} {}",
            c["area"].as_str().unwrap_or(""),
            c["detail"].as_str().unwrap_or("")
        ));
        if let Some(f) = c["fix"].as_str() {
            if status == "problem" || status == "warn" {
                output::say(format!("  {:<10} {} {f}", "", paint(style::BOLD, "fix:")));
            }
        }
    }
    let w = report["warnings"].as_array().map_or(0, Vec::len);
    if report["ok"] == json!(true) {
        let warnings = match w {
            0 => String::new(),
            n => format!(" ({})", output::count(n as u64, "warning")),
        };
        output::say(format!(
            "\n{} {}",
            output::good(),
            paint(style::GOOD, format!("All is well{warnings}."))
        ));
    }
}
