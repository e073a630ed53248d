//! `metroctl start` / `metroctl stop`: metrod in the background for people
//! without a service manager (`metroctl service install` is the other way).
//!
//! `start` runs the `metrod` beside this `metroctl` (else the one on
//! `PATH`) detached — its own session, stdin from /dev/null, stdout and
//! stderr appended to `<state dir>/metrod.log` — and waits until it
//! answers `hello`. `stop` asks the daemon on the socket for its state dir,
//! reads its pid from `metrod.lock` there, sends SIGTERM (metrod's clean
//! shutdown: it stops accepting, flushes cursors and the log, removes its
//! socket) and waits until the process and the socket are gone. A
//! socket-activated metrod is left to `systemctl`: its socket unit would
//! start it again.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use super::conn::Connection;
use super::output::Report;
use super::CliError;
use crate::proto::{Hello, Request};

/// How long `start` waits for `hello`, and `stop` for the exit.
const WAIT: Duration = Duration::from_secs(30);
/// A `metrod.log` larger than this at `start` is moved to `metrod.log.1`
/// first (so the two files hold at most this plus one run's output).
const LOG_ROLL: u64 = 8 << 20;

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Arguments for metrod after `--` (e.g. `-- --fsync never`).
    #[arg(last = true, value_name = "METROD_ARGS")]
    pub metrod_args: Vec<String>,
}

/// The state dir and pid of the metrod answering on `socket`, if any.
fn running(socket: &Path) -> Option<(PathBuf, Option<i32>)> {
    let mut conn = Connection::open(socket).ok()?;
    let hello = Request::Hello(Hello {
        client: Some("metroctl".into()),
    });
    let a = conn.call(&hello).ok()?;
    let dir = PathBuf::from(a["stateDir"].as_str()?);
    let pid = std::fs::read_to_string(dir.join("metrod.lock"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    Some((dir, pid))
}

/// The `metrod` beside this executable, else `metrod` on `PATH`.
fn metrod_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("metrod")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("metrod"))
}

fn open_log(path: &Path) -> Result<File, CliError> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_ROLL) {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            CliError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot open {}: {e}", path.display()),
            ))
        })
}

/// The last lines of the log, for a start that failed.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

pub fn start(socket: &Path, args: StartArgs) -> Result<(), CliError> {
    let mut report = Report::default();
    if let Some((dir, pid)) = running(socket) {
        report.say(format!(
            "metrod is already running ({}state dir {}, socket {})",
            pid.map(|p| format!("pid {p}, ")).unwrap_or_default(),
            dir.display(),
            socket.display()
        ));
        report.set("already", true);
        report.set("stateDir", dir.display().to_string());
        report.set("pid", json!(pid));
        report.finish();
        return Ok(());
    }
    let dir = crate::paths::state_dir();
    super::create_dir(&dir, 0o700)?;
    let log_path = dir.join("metrod.log");
    let log = open_log(&log_path)?;
    let err = log.try_clone().map_err(CliError::Io)?;
    let binary = metrod_binary();
    let mut cmd = Command::new(&binary);
    cmd.arg("--state-dir")
        .arg(&dir)
        .arg("--socket")
        .arg(socket)
        .args(&args.metrod_args)
        // Not a service, whatever ran this metroctl.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours:
    // the child leaves our session, so closing the terminal does not stop it.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        CliError::Io(std::io::Error::new(
            e.kind(),
            format!(
                "cannot run {}: {e} (install it with `cargo install --path . --locked`)",
                binary.display()
            ),
        ))
    })?;
    let deadline = Instant::now() + WAIT;
    loop {
        if running(socket).is_some() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CliError::Check(format!(
                "metrod exited at once ({status}); the end of {}:\n{}",
                log_path.display(),
                log_tail(&log_path)
            )));
        }
        if Instant::now() >= deadline {
            return Err(CliError::Check(format!(
                "metrod (pid {}) did not answer on {} within {} s; see {}",
                child.id(),
                socket.display(),
                WAIT.as_secs(),
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    report.say(format!(
        "metrod started (pid {}), state dir {}\nlog: {}\nstop it with `metroctl stop`",
        child.id(),
        dir.display(),
        log_path.display()
    ));
    report.set("already", false);
    report.set("pid", child.id());
    report.set("stateDir", dir.display().to_string());
    report.set("log", log_path.display().to_string());
    report.finish();
    Ok(())
}

/// True when `pid` was started by socket activation (systemd sets
/// `LISTEN_PID` to the pid it hands the socket to): its socket unit would
/// start it again at the next connection. Linux only (`/proc`).
fn socket_activated(pid: Pid) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| listen_pid_is(&env, pid.as_raw()))
}

fn listen_pid_is(environ: &[u8], pid: i32) -> bool {
    let want = format!("LISTEN_PID={pid}");
    environ.split(|b| *b == 0).any(|kv| kv == want.as_bytes())
}

/// True while `pid` runs (a zombie waiting for its parent does not count).
fn alive(pid: Pid) -> bool {
    if kill(pid, None).is_err() {
        return false;
    }
    // Linux: the state is the field after the parenthesized name.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

pub fn stop(socket: &Path) -> Result<(), CliError> {
    let mut report = Report::default();
    let Some((dir, pid)) = running(socket) else {
        report.say(format!(
            "metrod is not running (no answer on {})",
            socket.display()
        ));
        report.set("stopped", false);
        report.finish();
        return Ok(());
    };
    let pid = pid.map(Pid::from_raw).ok_or_else(|| {
        CliError::Check(format!(
            "metrod answers on {} but {} holds no pid; stop it with your service manager or kill",
            socket.display(),
            dir.join("metrod.lock").display()
        ))
    })?;
    if socket_activated(pid) {
        return Err(CliError::Usage(format!(
            "metrod (pid {pid}) was started by systemd's socket: stopping it here would not last \
             (the next connection starts it again). Stop the service instead: \
             `systemctl --user stop metrod.socket metrod.service`"
        )));
    }
    kill(pid, Signal::SIGTERM).map_err(|e| {
        CliError::Io(std::io::Error::other(format!(
            "cannot signal metrod (pid {pid}): {e}"
        )))
    })?;
    let deadline = Instant::now() + WAIT;
    while alive(pid) || socket.exists() {
        if Instant::now() >= deadline {
            let why = if alive(pid) {
                format!("metrod (pid {pid}) is still running")
            } else {
                format!(
                    "metrod exited but {} stays (a service manager may hold it)",
                    socket.display()
                )
            };
            return Err(CliError::Check(format!("{why} after {} s", WAIT.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    report.say(format!("metrod stopped (pid {pid})"));
    report.set("stopped", true);
    report.set("pid", pid.as_raw());
    report.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_pid_names_the_process_itself() {
        let env = b"HOME=/home/ana\0LISTEN_FDS=1\0LISTEN_PID=4242\0";
        assert!(listen_pid_is(env, 4242));
        // Inherited by a child: another pid.
        assert!(!listen_pid_is(env, 4243));
        assert!(!listen_pid_is(b"LISTEN_PID=42420\0", 4242));
        assert!(!listen_pid_is(b"", 4242));
    }
}
