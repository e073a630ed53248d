//! Helpers of the service tests (tests/service.rs, tests/metroctl_service.rs):
//! config files, `stats` → `config`, metroctl with a private HOME.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Daemon, METROCTL, PATIENCE};

pub const TG: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq";
pub const TG_SECRET: &str = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq";
pub const TG2: &str = "987654321:BBHdqTcvCH1vGWJxfSeofSAs0K5PALDsawz";
// base64("123456789012345678") . 6 characters . 27 characters
pub const DC: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDe.abcdefghijklmnopqrstuvwxyz0";
pub const DC_SECRET: &str = "abcdefghijklmnopqrstuvwxyz0";

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// metroctl with a private HOME (no real ~/.config, ~/.cloudflared or
/// service files are read or written) and no stdin.
pub fn ctl(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(METROCTL);
    c.args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("METRO_CONFIG")
        .env_remove("METRO_STATE_DIR")
        .env_remove("METRO_SOCKET")
        .env_remove("METRO_TELEGRAM_TOKEN")
        .env_remove("METRO_DISCORD_TOKEN")
        .stdin(Stdio::null());
    c
}

/// Writes a config file `0600` from the first byte, then renames it into
/// place, as an editor that saves atomically does.
pub fn write_config(path: &Path, body: &str, file_mode: u32) {
    let tmp = path.with_extension("tmp-write");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(file_mode)
        .open(&tmp)
        .unwrap();
    f.write_all(body.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(file_mode)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn stats_config(d: &Daemon) -> Value {
    d.connect().ok(json!({"op": "stats"}))["config"].clone()
}

/// Polls `stats` until `pred` holds on its `config` object.
pub fn wait_config(d: &Daemon, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let c = stats_config(d);
        if pred(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: config stays {c}\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

pub fn config_body(token: &str, allow: &[&str]) -> String {
    format!(
        "[telegram]\ntoken = \"{token}\"\nallow = [{}]\n",
        allow
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
