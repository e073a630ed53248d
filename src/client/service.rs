//! `metroctl service install|uninstall|status`: metrod as a user service —
//! systemd user units on Linux, a LaunchAgent on macOS. metroctl writes the
//! files (from `systemd/` and `launchd/` of the repository, compiled in)
//! with the path of the installed `metrod`, and prints the one command that
//! enables them. It never runs the service manager and never needs root.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::conn::Connection;
use super::output::{self, Report};
use super::CliError;
use crate::proto::Request;

pub const SYSTEMD_SERVICE: &str = include_str!("../../systemd/metrod.service");
pub const SYSTEMD_SOCKET: &str = include_str!("../../systemd/metrod.socket");
pub const LAUNCHD_PLIST: &str = include_str!("../../launchd/dev.metro.metrod.plist");
/// The LaunchAgent's label (and file name, with `.plist`).
pub const LAUNCHD_LABEL: &str = "dev.metro.metrod";

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the user service files with this metrod's path and print the
    /// command that enables them.
    #[command(after_help = super::help::SERVICE_INSTALL)]
    Install(InstallArgs),
    /// Remove the service files and print the command that stops the service.
    #[command(after_help = super::help::SERVICE_UNINSTALL)]
    Uninstall(Target),
    /// Whether the service files are installed, enabled, and metrod answers.
    #[command(after_help = super::help::SERVICE_STATUS)]
    Status {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        json: super::Json,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Manager {
    Systemd,
    Launchd,
}

impl Manager {
    fn name(self) -> &'static str {
        match self {
            Manager::Systemd => "systemd",
            Manager::Launchd => "launchd",
        }
    }
}

#[derive(Debug, Args, Clone, Default)]
pub struct Target {
    /// Where the files go [default: ~/.config/systemd/user, or
    /// ~/Library/LaunchAgents on macOS]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Service manager [default: launchd on macOS, systemd elsewhere]
    #[arg(long, value_enum)]
    pub manager: Option<Manager>,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub target: Target,
    /// The metrod binary the service runs [default: the metrod next to
    /// this metroctl]
    #[arg(long, value_name = "PATH")]
    pub metrod: Option<PathBuf>,
    /// Use a metrod inside a cargo target/ directory anyway (`cargo build`
    /// and `cargo clean` replace or delete it under the service).
    #[arg(long)]
    pub allow_cargo_target: bool,
}

impl Target {
    fn manager(&self) -> Manager {
        self.manager.unwrap_or(if cfg!(target_os = "macos") {
            Manager::Launchd
        } else {
            Manager::Systemd
        })
    }

    fn dir(&self) -> PathBuf {
        if let Some(d) = &self.dir {
            return d.clone();
        }
        match self.manager() {
            Manager::Systemd => config_home().join("systemd/user"),
            Manager::Launchd => home().join("Library/LaunchAgents"),
        }
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn home() -> PathBuf {
    env_path("HOME").unwrap_or_else(|| PathBuf::from("/"))
}

fn config_home() -> PathBuf {
    env_path("XDG_CONFIG_HOME").unwrap_or_else(|| home().join(".config"))
}

/// The default state dir a user service runs on: systemd's `%S/metro`
/// ($XDG_STATE_HOME, else ~/.local/state), which is also metro's default
/// without $METRO_STATE_DIR.
fn service_state_dir() -> PathBuf {
    env_path("XDG_STATE_HOME")
        .unwrap_or_else(|| home().join(".local/state"))
        .join("metro")
}

/// A path as one `ExecStart=` word: `%` and `$` would be expanded by
/// systemd, quotes and backslashes escaped; quoted when it has spaces.
fn systemd_word(p: &Path) -> String {
    let s = p.display().to_string();
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        format!("\"{out}\"")
    } else {
        out
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The files a manager's service consists of: (file name, content).
pub fn render(manager: Manager, metrod: &Path) -> Vec<(&'static str, String)> {
    match manager {
        Manager::Systemd => vec![
            (
                "metrod.service",
                SYSTEMD_SERVICE.replace("@METROD@", &systemd_word(metrod)),
            ),
            ("metrod.socket", SYSTEMD_SOCKET.to_string()),
        ],
        Manager::Launchd => vec![(
            "dev.metro.metrod.plist",
            LAUNCHD_PLIST
                .replace("@METROD@", &xml_escape(&metrod.display().to_string()))
                .replace(
                    "@STATE_DIR@",
                    &xml_escape(&crate::paths::state_dir().display().to_string()),
                )
                .replace("@LOG_DIR@", &xml_escape(&log_dir().display().to_string())),
        )],
    }
}

/// Where the LaunchAgent's output goes.
fn log_dir() -> PathBuf {
    home().join("Library/Logs/metro")
}

/// The metrod to run: `--metrod`, else the one next to this metroctl;
/// absolute, and an executable file.
fn find_metrod(given: Option<&Path>) -> Result<PathBuf, CliError> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let me = std::env::current_exe().map_err(CliError::Io)?;
            me.parent().map(|d| d.join("metrod")).ok_or_else(|| {
                CliError::Usage("cannot tell where metroctl is; pass --metrod PATH".into())
            })?
        }
    };
    let abs = fs::canonicalize(&path).map_err(|e| {
        CliError::Usage(format!(
            "no metrod at {} ({e}); install it next to metroctl or pass --metrod PATH",
            path.display()
        ))
    })?;
    let meta = fs::metadata(&abs).map_err(CliError::Io)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(CliError::Usage(format!(
            "{} is not an executable file; pass --metrod PATH",
            abs.display()
        )));
    }
    Ok(abs)
}

/// The cargo target directory `metrod` is inside, if any: an ancestor
/// holding cargo's `CACHEDIR.TAG` (also a custom `CARGO_TARGET_DIR`), or
/// named `target` beside a `Cargo.toml`.
fn cargo_target_dir(metrod: &Path) -> Option<&Path> {
    metrod.ancestors().skip(1).find(|d| {
        let tagged =
            fs::read(d.join("CACHEDIR.TAG")).is_ok_and(|t| t.windows(5).any(|w| w == b"cargo"));
        let named = d.file_name().is_some_and(|n| n == "target")
            && d.parent().is_some_and(|p| p.join("Cargo.toml").is_file());
        tagged || named
    })
}

/// Refuses (or, with `--allow-cargo-target`, warns loudly about) a metrod
/// that `cargo build` or `cargo clean` would swap or delete under the
/// running service.
fn check_not_cargo_target(metrod: &Path, allow: bool) -> Result<(), CliError> {
    let Some(target) = cargo_target_dir(metrod) else {
        return Ok(());
    };
    let why = format!(
        "{} is a build inside cargo's target directory {}: the next `cargo build` replaces it and \
         `cargo clean` deletes it under the running service",
        metrod.display(),
        target.display()
    );
    let fix = "install metro first with `cargo install --path . --locked` (from the metro checkout; \
               it puts metrod and metroctl in ~/.cargo/bin), then run `~/.cargo/bin/metroctl service install`";
    if allow {
        eprintln!("metroctl: WARNING: {why}. To avoid it, {fix}.");
        return Ok(());
    }
    Err(CliError::Usage(format!(
        "refusing to install: {why}.\nTo fix: {fix}.\n(--allow-cargo-target uses this build anyway.)"
    )))
}

/// Writes `text` to `path` through a temp file and a rename (0644: unit
/// files hold no secret).
fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+~".contains(&b))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn run(socket: &Path, cmd: ServiceCommand) -> Result<(), CliError> {
    match cmd {
        ServiceCommand::Install(a) => install(&a),
        ServiceCommand::Uninstall(t) => uninstall(&t),
        ServiceCommand::Status { target, json } => {
            let st = status(socket, &target);
            print_status(&st, json.json);
            Ok(())
        }
    }
}

fn install(a: &InstallArgs) -> Result<(), CliError> {
    let mut out = Report::default();
    let manager = a.target.manager();
    let dir = a.target.dir();
    let metrod = find_metrod(a.metrod.as_deref())?;
    check_not_cargo_target(&metrod, a.allow_cargo_target)?;
    super::create_dir(&dir, 0o755)?;
    let mut fresh = true;
    let mut changed = false;
    for (name, text) in render(manager, &metrod) {
        let path = dir.join(name);
        match fs::read_to_string(&path) {
            Ok(old) if old == text => {
                fresh = false;
                out.say(format!("unchanged {}", path.display()));
                out.push("files", json!({"path": path, "action": "unchanged"}));
                continue;
            }
            Ok(_) => {
                fresh = false;
                changed = true;
                write_file(&path, &text).map_err(CliError::Io)?;
                out.say(format!("updated {}", path.display()));
                out.push("files", json!({"path": path, "action": "updated"}));
            }
            Err(_) => {
                changed = true;
                write_file(&path, &text).map_err(CliError::Io)?;
                out.say(format!("wrote {}", path.display()));
                out.push("files", json!({"path": path, "action": "wrote"}));
            }
        }
    }
    out.say(format!("metrod: {}", metrod.display()));
    out.set("metrod", json!(metrod));
    if manager == Manager::Launchd {
        super::create_dir(&log_dir(), 0o700)?;
        let log = log_dir().join("metrod.log");
        out.say(format!("log: {}", log.display()));
        out.set("log", json!(log));
    }
    if let Some(d) = env_path("METRO_STATE_DIR") {
        if manager == Manager::Systemd && d != service_state_dir() {
            let note = format!(
                "$METRO_STATE_DIR is {} here, but the service uses {} (its socket: {}/metro.sock)",
                d.display(),
                service_state_dir().display(),
                service_state_dir().display()
            );
            out.say(format!("note: {note}"));
            out.push("notes", note);
        }
    }
    out.say("");
    let plist = dir.join(format!("{LAUNCHD_LABEL}.plist"));
    let command = match (manager, fresh, changed) {
        (_, false, false) => {
            out.say("Already installed; nothing changed.");
            out.set("command", Value::Null);
            out.finish();
            return Ok(());
        }
        (Manager::Systemd, true, _) => {
            "systemctl --user enable --now metrod.socket metrod.service".to_string()
        }
        (Manager::Systemd, false, _) => {
            "systemctl --user daemon-reload && systemctl --user restart metrod.service".to_string()
        }
        (Manager::Launchd, true, _) => {
            format!("launchctl bootstrap gui/{} {}", uid(), shell_quote(&plist))
        }
        (Manager::Launchd, false, _) => format!(
            "launchctl bootout gui/{uid}/{LAUNCHD_LABEL}; launchctl bootstrap gui/{uid} {}",
            shell_quote(&plist),
            uid = uid()
        ),
    };
    out.say(format!(
        "{} it with (stop a metrod running in a terminal first):",
        if fresh { "Enable" } else { "Apply" }
    ));
    out.say(format!("  {command}"));
    out.set("command", command);
    if manager == Manager::Systemd && fresh {
        out.say(
            "It runs while you are logged in; to keep it running after you log out: loginctl enable-linger",
        );
    }
    out.finish();
    Ok(())
}

fn uninstall(t: &Target) -> Result<(), CliError> {
    let mut out = Report::default();
    out.set("removed", json!([]));
    let manager = t.manager();
    let dir = t.dir();
    let mut removed = 0;
    // The files, and the links `systemctl enable` made next to them.
    let mut paths: Vec<PathBuf> = render(manager, Path::new("/"))
        .into_iter()
        .map(|(name, _)| dir.join(name))
        .collect();
    if manager == Manager::Systemd {
        paths.push(dir.join("sockets.target.wants/metrod.socket"));
        paths.push(dir.join("default.target.wants/metrod.service"));
    }
    for p in &paths {
        match fs::remove_file(p) {
            Ok(()) => {
                removed += 1;
                out.say(format!("removed {}", p.display()));
                out.push("removed", json!(p));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CliError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot remove {}: {e}", p.display()),
                )))
            }
        }
    }
    if removed == 0 {
        out.say(format!(
            "not installed in {}; nothing removed",
            dir.display()
        ));
        out.set("command", Value::Null);
        out.finish();
        return Ok(());
    }
    let command = match manager {
        Manager::Systemd => {
            "systemctl --user stop metrod.socket metrod.service && systemctl --user daemon-reload"
                .to_string()
        }
        Manager::Launchd => format!("launchctl bootout gui/{}/{LAUNCHD_LABEL}", uid()),
    };
    out.say("");
    out.say("Stop the running service with:");
    out.say(format!("  {command}"));
    out.set("command", command);
    out.say(format!(
        "The state dir ({}) is left as it is.",
        crate::paths::state_dir().display()
    ));
    out.finish();
    Ok(())
}

/// What `service status` finds; also used by `doctor`.
pub fn status(socket: &Path, t: &Target) -> Value {
    let manager = t.manager();
    let dir = t.dir();
    let mut files = Vec::new();
    let mut metrod: Option<String> = None;
    for (name, _) in render(manager, Path::new("/")) {
        let path = dir.join(name);
        let text = fs::read_to_string(&path).ok();
        if let Some(text) = &text {
            if metrod.is_none() {
                metrod = match manager {
                    Manager::Systemd => text
                        .lines()
                        .find_map(|l| l.strip_prefix("ExecStart="))
                        .map(|s| s.trim().trim_matches('"').to_string()),
                    Manager::Launchd => text
                        .split("<key>ProgramArguments</key>")
                        .nth(1)
                        .and_then(|r| r.split("<string>").nth(1))
                        .and_then(|r| r.split("</string>").next())
                        .map(|s| {
                            s.replace("&amp;", "&")
                                .replace("&lt;", "<")
                                .replace("&gt;", ">")
                        }),
                };
            }
        }
        files.push(json!({"path": path.display().to_string(), "installed": text.is_some()}));
    }
    let installed = files.iter().all(|f| f["installed"] == json!(true));
    let enabled = match manager {
        Manager::Systemd => Some(
            fs::symlink_metadata(dir.join("sockets.target.wants/metrod.socket")).is_ok()
                || fs::symlink_metadata(dir.join("default.target.wants/metrod.service")).is_ok(),
        ),
        Manager::Launchd => None,
    };
    let metrod_ok = metrod.as_deref().map(|m| {
        fs::metadata(m).is_ok_and(|md| md.is_file() && md.permissions().mode() & 0o111 != 0)
    });
    let daemon = match Connection::open(socket).and_then(|mut c| {
        c.call(&Request::Hello(crate::proto::Hello {
            client: Some("metroctl".into()),
        }))
    }) {
        Ok(h) => {
            json!({"socket": socket.display().to_string(), "answers": true, "version": h["version"]})
        }
        Err(e) => {
            json!({"socket": socket.display().to_string(), "answers": false, "error": e.to_string()})
        }
    };
    json!({
        "manager": manager.name(),
        "dir": dir.display().to_string(),
        "installed": installed,
        "files": files,
        "metrod": metrod,
        "metrodExists": metrod_ok,
        "enabled": enabled,
        "daemon": daemon,
    })
}

fn print_status(st: &Value, json: bool) {
    if output::json_mode(json) {
        println!("{st}");
        return;
    }
    println!(
        "manager    {} ({})",
        st["manager"].as_str().unwrap_or(""),
        st["dir"].as_str().unwrap_or("")
    );
    for f in st["files"].as_array().into_iter().flatten() {
        println!(
            "file       {}: {}",
            f["path"].as_str().unwrap_or(""),
            if f["installed"] == json!(true) {
                "installed"
            } else {
                "not installed"
            }
        );
    }
    if let Some(m) = st["metrod"].as_str() {
        println!(
            "metrod     {m}{}",
            if st["metrodExists"] == json!(true) {
                ""
            } else {
                " (missing: run `metroctl service install` again)"
            }
        );
    }
    match st["enabled"].as_bool() {
        Some(true) => println!("enabled    yes"),
        Some(false) => println!("enabled    no"),
        None => {}
    }
    let d = &st["daemon"];
    if d["answers"] == json!(true) {
        println!(
            "daemon     answers on {} (metrod {})",
            d["socket"].as_str().unwrap_or(""),
            d["version"].as_str().unwrap_or("?")
        );
    } else {
        println!(
            "daemon     not answering on {}",
            d["socket"].as_str().unwrap_or("")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_words_are_escaped() {
        assert_eq!(
            systemd_word(Path::new("/usr/bin/metrod")),
            "/usr/bin/metrod"
        );
        assert_eq!(
            systemd_word(Path::new("/home/a b/100%/$x/metrod")),
            "\"/home/a b/100%%/$$x/metrod\""
        );
        let files = render(Manager::Systemd, Path::new("/opt/metro/metrod"));
        assert!(files[0].1.contains("\nExecStart=/opt/metro/metrod\n"));
        assert!(!files
            .iter()
            .any(|(_, t)| t.contains('@') && t.contains("@METROD@")));
        let plist = render(Manager::Launchd, Path::new("/a&b/metrod"));
        assert!(plist[0].1.contains("<string>/a&amp;b/metrod</string>"));
    }
}
