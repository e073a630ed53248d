//! `metroctl tunnel setup|check`: expose the webhook listener through a
//! Cloudflare Tunnel. metro only writes the cloudflared config and prints
//! the commands; it never downloads or runs cloudflared. `metroctl doctor`
//! ([`super::doctor`]) runs the same check.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlLoader};

use super::conn::Connection;
use super::output::{self, Report};
use super::CliError;
use crate::config::DEFAULT_WEBHOOK_ADDR as DEFAULT_ADDR;
use crate::proto::Request;

#[derive(Debug, Subcommand)]
pub enum TunnelCommand {
    /// Write a cloudflared config routing HOSTNAME to the webhook listener,
    /// and print the cloudflared commands that create and run the tunnel.
    #[command(after_help = super::help::TUNNEL_SETUP)]
    Setup {
        /// Tunnel name (letters, digits, '-', '_'); also the config's file name.
        name: String,
        /// Public hostname, e.g. hooks.example.com (a zone on your Cloudflare account).
        hostname: String,
        #[command(flatten)]
        dir: ConfigDir,
        /// Local service to route to [default: the daemon's webhook
        /// listener, else http://127.0.0.1:8787]
        #[arg(long, value_name = "URL")]
        service: Option<String>,
        /// Replace an existing config of that name.
        #[arg(long)]
        force: bool,
    },
    /// Check that cloudflared is on PATH and the tunnel config(s) parse.
    #[command(after_help = super::help::TUNNEL_CHECK)]
    Check(CheckArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ConfigDir {
    /// Where cloudflared configs live [default: ~/.cloudflared]
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
}

impl ConfigDir {
    fn path(&self) -> PathBuf {
        self.config_dir
            .clone()
            .unwrap_or_else(crate::paths::cloudflared_dir)
    }
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    /// Only this tunnel's config [default: every *.yml / *.yaml in the dir]
    pub name: Option<String>,
    #[command(flatten)]
    pub dir: ConfigDir,
    /// Print JSON even on a terminal (piped output is JSON already).
    #[arg(long)]
    pub json: bool,
}

pub fn run(socket: &Path, cmd: TunnelCommand) -> Result<(), CliError> {
    match cmd {
        TunnelCommand::Setup {
            name,
            hostname,
            dir,
            service,
            force,
        } => {
            // cloudflared resolves relative paths against its own working dir.
            let dir = std::path::absolute(dir.path()).map_err(CliError::Io)?;
            setup(socket, &name, &hostname, &dir, service, force)
        }
        TunnelCommand::Check(args) => {
            let report = check(socket, &args, false);
            finish(report, args.json)
        }
    }
}

fn check_name(name: &str) -> Result<(), CliError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(CliError::Usage(format!(
            "tunnel name {name:?}: use 1-64 letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

fn check_hostname(host: &str) -> Result<String, CliError> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.len() > 253 || !host.contains('.') || !host.split('.').all(label_ok) {
        return Err(CliError::Usage(format!(
            "{host:?} is not a hostname such as hooks.example.com"
        )));
    }
    Ok(host)
}

/// What the daemon says about itself, if it answers.
struct DaemonInfo {
    version: String,
    webhook: Value,
    telegram: Value,
}

fn ask_daemon(socket: &Path) -> Result<DaemonInfo, CliError> {
    let mut conn = Connection::open(socket)?;
    let hello = conn.call(&Request::Hello(crate::proto::Hello {
        client: Some("metroctl".into()),
    }))?;
    let st = conn.call(&Request::Stations)?;
    let row = |name: &str| {
        st["stations"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    Ok(DaemonInfo {
        version: hello["version"].as_str().unwrap_or("?").to_string(),
        webhook: row("webhook"),
        telegram: row("telegram"),
    })
}

/// `http://<ip>:<port>` that reaches the listener from this machine: an
/// unspecified bind address (0.0.0.0, ::) is reached on loopback.
fn local_service(listen: &str) -> Option<String> {
    let addr: std::net::SocketAddr = listen.parse().ok()?;
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    Some(format!("http://{ip}:{}", addr.port()))
}

fn yaml_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The config text: the tunnel, its credentials file, one ingress rule
/// for `/hooks/` on `hostname`, and the catch-all 404 cloudflared requires.
pub fn config_text(name: &str, hostname: &str, credentials: &Path, service: &str) -> String {
    format!(
        "# cloudflared config for metro's webhook listener (written by `metroctl tunnel setup`).\n\
         # Only /hooks/<id> is routed to metrod; everything else gets 404.\n\
         tunnel: {name}\n\
         credentials-file: {cred}\n\
         ingress:\n  \
           - hostname: {hostname}\n    \
             path: \"^/hooks/\"\n    \
             service: {service}\n  \
           - service: http_status:404\n",
        cred = yaml_quote(&credentials.display().to_string()),
        service = yaml_quote(service),
    )
}

fn setup(
    socket: &Path,
    name: &str,
    hostname: &str,
    dir: &Path,
    service: Option<String>,
    force: bool,
) -> Result<(), CliError> {
    check_name(name)?;
    let hostname = check_hostname(hostname)?;
    let (service, source) = match service {
        Some(s) if s.starts_with("http://") || s.starts_with("https://") => (s, "--service"),
        Some(s) => {
            return Err(CliError::Usage(format!(
                "--service {s:?}: expected a URL such as http://127.0.0.1:8787"
            )))
        }
        None => match ask_daemon(socket) {
            Ok(info) => match info.webhook["listen"].as_str().and_then(local_service) {
                Some(s) => (s, "the running metrod's webhook listener"),
                None => (
                    format!("http://{DEFAULT_ADDR}"),
                    "the default (the running metrod reports no webhook listener)",
                ),
            },
            Err(_) => (
                format!("http://{DEFAULT_ADDR}"),
                "the default (metrod is not reachable)",
            ),
        },
    };
    let file = dir.join(format!("{name}.yml"));
    let credentials = dir.join(format!("{name}.json"));
    if file.exists() && !force {
        return Err(CliError::Usage(format!(
            "{} exists; pass --force to replace it",
            file.display()
        )));
    }
    // ~/.cloudflared holds tunnel credentials: keep a new one private.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(CliError::Io)?;
    let text = config_text(name, &hostname, &credentials, &service);
    let tmp = dir.join(format!(".{name}.yml.tmp"));
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, &file)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(CliError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot write {}: {e}", file.display()),
        )));
    }
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let mut out = Report::default();
    out.say(format!(
        "wrote {}: https://{hostname}/hooks/<id> -> {service} ({source})",
        file.display()
    ));
    out.set("config", json!(file));
    out.set("url", format!("https://{hostname}/hooks/<id>"));
    out.set("service", service.as_str());
    out.say("");
    out.say("Next (cloudflared installed and logged in with `cloudflared tunnel login`):");
    for command in [
        format!(
            "cloudflared tunnel create --credentials-file {} {name}",
            q(&credentials)
        ),
        format!("cloudflared tunnel route dns {name} {hostname}"),
        format!("cloudflared tunnel --config {} run {name}", q(&file)),
    ] {
        out.say(format!("  {command}"));
        out.push("next", command);
    }
    out.say("");
    out.say(format!(
        "Then give the sender https://{hostname}/hooks/<id> (ids: `metroctl webhook list`); \
         `metroctl tunnel check {name}` checks the setup."
    ));
    out.say(
        "Only /hooks/ goes through the tunnel: the monitor page and API (docs/monitor.md) stay \
         on this machine. Routing / or /api/ too would put them on the internet with the \
         monitor token as their only guard; that is your choice to make, not metro's.",
    );
    out.finish();
    Ok(())
}

/// Where `program` is on `$PATH`, if anywhere.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Checks one cloudflared config; `listener` is the service the daemon's
/// webhook listener is reached at, when known.
pub fn check_config(file: &Path, listener: Option<&str>) -> Value {
    let mut problems: Vec<String> = Vec::new();
    let mut report = json!({ "file": file.display().to_string() });
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            report["parses"] = json!(false);
            report["problems"] = json!([format!("cannot read {}: {e}", file.display())]);
            return report;
        }
    };
    let docs = match YamlLoader::load_from_str(&text) {
        Ok(d) => d,
        Err(e) => {
            report["parses"] = json!(false);
            report["problems"] = json!([format!("not valid YAML: {e}")]);
            return report;
        }
    };
    report["parses"] = json!(true);
    let Some(doc) = docs.first().filter(|d| d.as_hash().is_some()) else {
        report["problems"] = json!(["not a YAML mapping"]);
        return report;
    };
    let tunnel = doc["tunnel"].as_str();
    if tunnel.is_none() {
        problems.push("no `tunnel:` (the tunnel's name or id)".into());
    }
    report["tunnel"] = json!(tunnel);
    let cred = doc["credentials-file"].as_str();
    report["credentialsFile"] = json!(cred);
    match cred {
        None => problems.push("no `credentials-file:`".into()),
        Some(c) => {
            let found = Path::new(c).is_file();
            report["credentialsFound"] = json!(found);
            if !found {
                problems.push(format!(
                    "credentials file {c} does not exist yet: run `cloudflared tunnel create --credentials-file {} {}`",
                    shell_quote(c),
                    tunnel.unwrap_or("<name>")
                ));
            }
        }
    }
    let rules: Vec<&Yaml> = doc["ingress"]
        .as_vec()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    if rules.is_empty() {
        problems.push("no `ingress:` rules".into());
    }
    let mut ingress = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let service = r["service"].as_str();
        if service.is_none() {
            problems.push(format!("ingress rule {} has no `service:`", i + 1));
        }
        ingress.push(json!({
            "hostname": r["hostname"].as_str(),
            "path": r["path"].as_str(),
            "service": service,
        }));
    }
    if let Some(last) = rules.last() {
        if !last["hostname"].is_badvalue() || !last["path"].is_badvalue() {
            problems.push(
                "the last ingress rule must match everything (no hostname or path), e.g. `- service: http_status:404`"
                    .into(),
            );
        }
    }
    if let Some(listener) = listener {
        let routed = ingress
            .iter()
            .any(|r| r["service"].as_str().map(|s| s.trim_end_matches('/')) == Some(listener));
        if !routed {
            problems.push(format!(
                "no ingress rule routes to the webhook listener at {listener}"
            ));
        }
    }
    report["ingress"] = json!(ingress);
    report["problems"] = json!(problems);
    report
}

/// The tunnel report: `cloudflared`, `configs`, `problems` (and `daemon`
/// with `with_daemon`).
pub(super) fn check(socket: &Path, args: &CheckArgs, with_daemon: bool) -> Value {
    let mut problems: Vec<String> = Vec::new();
    let mut report = json!({});
    let daemon = ask_daemon(socket);
    let listener = daemon
        .as_ref()
        .ok()
        .and_then(|d| d.webhook["listen"].as_str())
        .filter(|_| {
            daemon
                .as_ref()
                .is_ok_and(|d| d.webhook["status"].as_str() == Some("ok"))
        })
        .and_then(local_service);
    if with_daemon {
        match &daemon {
            Ok(info) => {
                report["daemon"] = json!({
                    "socket": socket.display().to_string(),
                    "version": info.version,
                    "webhook": info.webhook,
                    "telegram": info.telegram,
                });
                if info.webhook["status"].as_str() != Some("ok") {
                    problems.push(format!(
                        "webhook station: {}",
                        info.webhook["status"].as_str().unwrap_or("not running")
                    ));
                }
                // A configured bot that cannot poll (409, 401, network…).
                if let Some(down) = info.telegram["status"]
                    .as_str()
                    .filter(|s| s.starts_with("down"))
                {
                    problems.push(format!("telegram station: {down}"));
                }
            }
            Err(e) => {
                report["daemon"] =
                    json!({"socket": socket.display().to_string(), "error": e.to_string()});
                problems.push(format!("metrod is not reachable at {}", socket.display()));
            }
        }
    }
    let cloudflared = which("cloudflared");
    report["cloudflared"] = json!(cloudflared.as_ref().map(|p| p.display().to_string()));
    if cloudflared.is_none() {
        problems.push(
            "cloudflared is not on PATH: install it from your package manager or Cloudflare (metro never downloads it)"
                .into(),
        );
    }
    let dir = args.dir.path();
    let files: Vec<PathBuf> = match &args.name {
        Some(n) => vec![dir.join(format!("{n}.yml"))],
        None => fs::read_dir(&dir)
            .map(|rd| {
                let mut v: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension().is_some_and(|e| e == "yml" || e == "yaml")
                            && !p
                                .file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    })
                    .collect();
                v.sort();
                v
            })
            .unwrap_or_default(),
    };
    if files.is_empty() {
        problems.push(format!(
            "no tunnel config in {}: run `metroctl tunnel setup <name> <hostname>`",
            dir.display()
        ));
    }
    let configs: Vec<Value> = files
        .iter()
        .map(|f| check_config(f, listener.as_deref()))
        .collect();
    for c in &configs {
        for p in c["problems"].as_array().into_iter().flatten() {
            problems.push(format!(
                "{}: {}",
                c["file"].as_str().unwrap_or(""),
                p.as_str().unwrap_or("")
            ));
        }
    }
    report["configs"] = json!(configs);
    report["ok"] = json!(problems.is_empty());
    report["problems"] = json!(problems);
    report
}

fn finish(report: Value, json: bool) -> Result<(), CliError> {
    if output::json_mode(json) {
        println!("{report}");
    } else {
        if let Some(d) = report.get("daemon") {
            match d["version"].as_str() {
                Some(v) => println!(
                    "metrod       {v} on {}; webhook: {}",
                    d["socket"].as_str().unwrap_or(""),
                    d["webhook"]["status"].as_str().unwrap_or("?")
                ),
                None => println!("metrod       not reachable"),
            }
            if let Some(t) = d["telegram"]["status"].as_str() {
                println!("telegram     {t}");
            }
        }
        match report["cloudflared"].as_str() {
            Some(p) => println!("cloudflared  {p}"),
            None => println!("cloudflared  not on PATH"),
        }
        for c in report["configs"].as_array().into_iter().flatten() {
            let state = if c["parses"] != json!(true) {
                "does not parse"
            } else if c["problems"].as_array().is_some_and(|p| p.is_empty()) {
                "ok"
            } else {
                "parses, with problems"
            };
            println!("config       {}: {state}", c["file"].as_str().unwrap_or(""));
            for r in c["ingress"].as_array().into_iter().flatten() {
                if let Some(h) = r["hostname"].as_str() {
                    println!(
                        "             {h}{} -> {}",
                        r["path"]
                            .as_str()
                            .map(|p| format!(" {p}"))
                            .unwrap_or_default(),
                        r["service"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        for p in report["problems"].as_array().into_iter().flatten() {
            println!("problem      {}", p.as_str().unwrap_or(""));
        }
    }
    super::output::problems_found(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_checks_out() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("metro.yml");
        let cred = tmp.path().join("dir with \"quotes\"/metro.json");
        fs::write(
            &file,
            config_text("metro", "hooks.example.com", &cred, "http://127.0.0.1:8787"),
        )
        .unwrap();
        let r = check_config(&file, Some("http://127.0.0.1:8787"));
        assert_eq!(r["parses"], json!(true));
        assert_eq!(r["tunnel"], json!("metro"));
        assert_eq!(r["credentialsFile"], json!(cred.display().to_string()));
        assert_eq!(r["ingress"][0]["hostname"], json!("hooks.example.com"));
        assert_eq!(r["ingress"][0]["path"], json!("^/hooks/"));
        assert_eq!(r["ingress"][1]["service"], json!("http_status:404"));
        // Only the credentials are missing.
        assert_eq!(r["problems"].as_array().unwrap().len(), 1, "{r}");
        let other = check_config(&file, Some("http://127.0.0.1:9999"));
        assert_eq!(other["problems"].as_array().unwrap().len(), 2, "{other}");
        fs::write(&file, "tunnel: [unclosed").unwrap();
        assert_eq!(check_config(&file, None)["parses"], json!(false));
    }

    #[test]
    fn services_and_names() {
        assert_eq!(
            local_service("0.0.0.0:8787").as_deref(),
            Some("http://127.0.0.1:8787")
        );
        assert_eq!(local_service("[::]:9").as_deref(), Some("http://[::1]:9"));
        assert!(check_name("metro-hooks_1").is_ok());
        assert!(check_name("../x").is_err());
        assert_eq!(
            check_hostname("Hooks.Example.com.").unwrap(),
            "hooks.example.com"
        );
        assert!(check_hostname("localhost").is_err());
        assert!(check_hostname("a b.com").is_err());
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
    }
}
