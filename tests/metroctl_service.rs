//! metroctl for running metro as a service: the systemd units (checked by
//! `systemd-analyze verify`) and the LaunchAgent plist (parsed by python3's
//! plistlib) that `service install` writes, `service status|uninstall`,
//! `setup`, `doctor`, `completions`.

mod common;
mod fake_telegram;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::svc::*;
use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------- units

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let units = tmp.path().join("units");
    let out = run_ok(&mut ctl(
        &home,
        &[
            "service",
            "install",
            "--manager",
            "systemd",
            "--dir",
            units.to_str().unwrap(),
            "--metrod",
            METROD,
            "--allow-cargo-target",
        ],
    ));
    let said = text(&out);
    assert!(
        said.contains("systemctl --user enable --now metrod.socket metrod.service"),
        "{said}"
    );
    let service = std::fs::read_to_string(units.join("metrod.service")).unwrap();
    let metrod = std::fs::canonicalize(METROD).unwrap();
    assert!(
        service.contains(&format!("\nExecStart={}\n", metrod.display())),
        "{service}"
    );
    for key in [
        "Type=notify",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "ReadWritePaths=%S/metro",
    ] {
        assert!(service.contains(&format!("\n{key}\n")), "{key} missing");
    }
    let socket = std::fs::read_to_string(units.join("metrod.socket")).unwrap();
    assert!(socket.contains("\nListenStream=%S/metro/metro.sock\n"));
    assert!(socket.contains("\nSocketMode=0600\n"));

    // systemd-analyze needs a user runtime dir to set up a user manager;
    // none runs in a container, so give it an empty private one.
    let rt = tmp.path().join("runtime");
    std::fs::create_dir(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    let verify = |dir: &Path| {
        Command::new("systemd-analyze")
            .args(["--user", "--man=no", "verify"])
            .arg(dir.join("metrod.socket"))
            .arg(dir.join("metrod.service"))
            .env("XDG_RUNTIME_DIR", &rt)
            .env("HOME", &home)
            .stdin(Stdio::null())
            .output()
            .expect("systemd-analyze (Debian package `systemd`; .ci/run installs it)")
    };
    let out = verify(&units);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );

    // The check has teeth: it complains about a unit that is wrong.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("metrod.socket"), &socket).unwrap();
    std::fs::write(
        bad.join("metrod.service"),
        service.replace("Type=notify", "Type=notifyy"),
    )
    .unwrap();
    let out = verify(&bad);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notifyy"),
        "{}",
        text(&out)
    );
}

#[test]
fn launchd_plist_parses_as_a_property_list() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let agents = tmp.path().join("LaunchAgents");
    let state = tmp.path().join("state dir & co");
    let out = run_ok(
        ctl(
            &home,
            &[
                "service",
                "install",
                "--manager",
                "launchd",
                "--dir",
                agents.to_str().unwrap(),
                "--metrod",
                METROD,
                "--allow-cargo-target",
            ],
        )
        .env("METRO_STATE_DIR", &state),
    );
    let said = text(&out);
    assert!(said.contains("launchctl bootstrap gui/"), "{said}");
    let plist = agents.join("dev.metro.metrod.plist");
    assert!(home.join("Library/Logs/metro").is_dir());
    let parsed = Command::new("python3")
        .arg("-c")
        .arg(
            "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        )
        .arg(&plist)
        .output()
        .expect("python3");
    assert!(parsed.status.success(), "{}", text(&parsed));
    let p: Value = serde_json::from_slice(&parsed.stdout).unwrap();
    let metrod = std::fs::canonicalize(METROD).unwrap();
    assert_eq!(p["Label"], "dev.metro.metrod");
    assert_eq!(p["ProgramArguments"], json!([metrod.display().to_string()]));
    assert_eq!(p["RunAtLoad"], json!(true));
    assert_eq!(p["KeepAlive"], json!(true));
    assert_eq!(
        p["EnvironmentVariables"]["METRO_STATE_DIR"],
        json!(state.display().to_string())
    );
    let log = home.join("Library/Logs/metro/metrod.log");
    assert_eq!(p["StandardOutPath"], json!(log.display().to_string()));
    assert_eq!(p["StandardErrorPath"], json!(log.display().to_string()));
}

#[test]
fn service_install_status_uninstall() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let units = tmp.path().join("units");
    let dir = units.to_str().unwrap();
    let target = ["--manager", "systemd", "--dir", dir];
    let status = |home: &Path| -> Value {
        let mut args = vec!["--socket", "/nonexistent/metro.sock", "service", "status"];
        args.extend(target);
        args.push("--json");
        serde_json::from_slice(&run_ok(&mut ctl(home, &args)).stdout).unwrap()
    };
    let s = status(&home);
    assert_eq!(s["installed"], json!(false));
    assert_eq!(s["daemon"]["answers"], json!(false));

    // A metrod in cargo's target/: refused, with the command that installs
    // metro properly; nothing written.
    let mut args = vec!["service", "install"];
    args.extend(target);
    args.extend(["--metrod", METROD]);
    let out = ctl(&home, &args).output().unwrap();
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("cargo install --path . --locked"), "{said}");
    assert!(said.contains("target"), "{said}");
    assert!(!units.join("metrod.service").exists());

    let install = |metrod: &str| {
        let mut args = vec!["service", "install"];
        args.extend(target);
        args.extend(["--metrod", metrod, "--allow-cargo-target"]);
        text(&run_ok(&mut ctl(&home, &args)))
    };
    // Allowed: installed, with a loud warning.
    let said = install(METROD);
    assert!(
        said.contains("WARNING") && said.contains("cargo install --path . --locked"),
        "{said}"
    );
    let s = status(&home);
    assert_eq!(s["installed"], json!(true), "{s}");
    assert_eq!(s["enabled"], json!(false));
    assert_eq!(s["metrodExists"], json!(true));
    let metrod = std::fs::canonicalize(METROD).unwrap();
    assert_eq!(s["metrod"], json!(metrod.display().to_string()));
    assert!(install(METROD).contains("Already installed"));

    // Another binary: the unit is updated and the command reloads.
    let other = tmp.path().join("bin dir/metrod");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::copy(METROD, &other).unwrap();
    let said = install(other.to_str().unwrap());
    assert!(said.contains("updated"), "{said}");
    assert!(said.contains("systemctl --user daemon-reload"), "{said}");
    let unit = std::fs::read_to_string(units.join("metrod.service")).unwrap();
    assert!(
        unit.contains(&format!("\nExecStart=\"{}\"\n", other.display())),
        "{unit}"
    );
    assert_eq!(status(&home)["metrod"], json!(other.display().to_string()));

    // `systemctl --user enable` makes this link; status sees it.
    std::fs::create_dir_all(units.join("sockets.target.wants")).unwrap();
    std::os::unix::fs::symlink(
        units.join("metrod.socket"),
        units.join("sockets.target.wants/metrod.socket"),
    )
    .unwrap();
    assert_eq!(status(&home)["enabled"], json!(true));

    let mut args = vec!["service", "uninstall"];
    args.extend(target);
    let said = text(&run_ok(&mut ctl(&home, &args)));
    assert!(said.contains("systemctl --user stop"), "{said}");
    assert!(!units.join("metrod.service").exists());
    assert!(!units.join("metrod.socket").exists());
    assert!(std::fs::symlink_metadata(units.join("sockets.target.wants/metrod.socket")).is_err());
    assert_eq!(status(&home)["installed"], json!(false));

    // No metrod there: refused, with the way out.
    let mut args = vec!["service", "install"];
    args.extend(target);
    args.extend(["--metrod", "/nonexistent/metrod"]);
    let out = ctl(&home, &args).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("--metrod"), "{}", text(&out));
}

// ---------------------------------------------------------------- doctor

#[test]
fn doctor_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let cfg = tmp.path().join("config.toml");
    write_config(&cfg, &config_body(TG, &["42"]), 0o600);
    // The config's token is real-looking; the station itself talks to a
    // fake Bot API (the environment overrides token and URL), so it is up.
    let fake = fake_telegram::Fake::start();
    let env = fake.env("42");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut d = Daemon::start_in_env(
        &tmp.path().join("state"),
        &["--config", cfg.to_str().unwrap()],
        &env,
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let st = d.connect().ok(json!({"op": "stations"}));
        let tg = st["stations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "telegram")
            .cloned();
        if tg.is_some_and(|t| t["status"] == "ok") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "telegram station never came up: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let sock = d.socket.to_str().unwrap().to_string();
    let doctor = || {
        let out = ctl(&home, &["--socket", &sock, "doctor", "--json"])
            .output()
            .unwrap();
        let report: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        (out.status.code(), report)
    };

    let (code, r) = doctor();
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["ok"], json!(true));
    assert_eq!(r["problems"], json!([]));
    let areas: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["area"].as_str().unwrap())
        .collect();
    for area in [
        "metrod",
        "state dir",
        "socket",
        "disk",
        "station",
        "config",
        "log",
        "cursors",
        "service",
        "tunnel",
    ] {
        assert!(areas.contains(&area), "no {area} check: {areas:?}");
    }
    assert_eq!(r["daemon"]["version"], json!(env!("CARGO_PKG_VERSION")));
    assert!(!r.to_string().contains(TG_SECRET));

    // A config others can read: a problem, with its fix.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, r) = doctor();
    assert_eq!(code, Some(1), "{r:#}");
    let problems = r["problems"].to_string();
    assert!(
        problems.contains(&format!("chmod 600 {}", cfg.display())),
        "{problems}"
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    wait_config(&d, "fixed", |c| c["error"].is_null());
    assert_eq!(doctor().0, Some(0));

    // Daemon down: a problem, and how to start it.
    assert!(d.stop().success());
    let (code, r) = doctor();
    assert_eq!(code, Some(1), "{r:#}");
    let problems = r["problems"].to_string();
    assert!(problems.contains("metrod is not reachable"), "{problems}");
    assert!(problems.contains("metroctl service install"), "{problems}");

    // The human report names the fix too.
    let out = ctl(&home, &["--socket", &sock, "doctor"])
        .env("METRO_CONFIG", &cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("1 problem found"), "{}", text(&out));
}

// ---------------------------------------------------------------- setup

#[test]
fn setup_writes_0600_merges_and_masks_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let cfg = tmp.path().join("new dir/config.toml");
    let c = cfg.to_str().unwrap();
    let nosock = tmp.path().join("none.sock");
    let s = nosock.to_str().unwrap();

    let out = run_ok(&mut ctl(
        &home,
        &[
            "--socket",
            s,
            "setup",
            "--config",
            c,
            "--telegram-token",
            TG,
            "--allow-telegram",
            "42, 43",
        ],
    ));
    let said = text(&out);
    assert!(!said.contains(TG_SECRET), "secret shown: {said}");
    assert!(said.contains("1234…wq"), "masked form: {said}");
    assert!(said.contains("allow 2 users"), "{said}");
    assert_eq!(mode(&cfg), 0o600);
    assert_eq!(mode(cfg.parent().unwrap()), 0o700);

    // The discord token from stdin; telegram is kept.
    let mut child = ctl(
        &home,
        &[
            "--socket",
            s,
            "setup",
            "--config",
            c,
            "--discord-token",
            "-",
            "--allow-discord",
            "*",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    writeln!(child.stdin.take().unwrap(), "{DC}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(DC_SECRET), "{}", text(&out));
    let written = std::fs::read_to_string(&cfg).unwrap();
    let parsed: toml::Value = toml::from_str(&written).unwrap();
    assert_eq!(parsed["telegram"]["token"].as_str(), Some(TG));
    assert_eq!(parsed["discord"]["token"].as_str(), Some(DC));
    assert_eq!(parsed["discord"]["allow"][0].as_str(), Some("*"));
    assert_eq!(mode(&cfg), 0o600);

    // A malformed token is refused and nothing changes.
    let out = ctl(
        &home,
        &[
            "--socket",
            s,
            "setup",
            "--config",
            c,
            "--telegram-token",
            "12:short",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("35"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), written);
    let out = ctl(
        &home,
        &[
            "--socket",
            s,
            "setup",
            "--config",
            c,
            "--allow-telegram",
            "bob",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));

    // A file others can read is tightened on the next write.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_ok(&mut ctl(
        &home,
        &[
            "--socket",
            s,
            "setup",
            "--config",
            c,
            "--allow-telegram",
            "*",
        ],
    ));
    assert!(text(&out).contains("it was 644"), "{}", text(&out));
    assert_eq!(mode(&cfg), 0o600);

    // No flags and no terminal: says what to do.
    let out = ctl(&home, &["--socket", s, "setup", "--config", c])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--telegram-token"), "{}", text(&out));
}

#[test]
fn setup_is_picked_up_by_the_running_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let cfg = tmp.path().join("cfg/config.toml");
    std::fs::create_dir(cfg.parent().unwrap()).unwrap();
    let d = Daemon::start_in(
        &tmp.path().join("state"),
        &["--config", cfg.to_str().unwrap()],
    );
    let out = run_ok(&mut ctl(
        &home,
        &[
            "--socket",
            d.socket.to_str().unwrap(),
            "setup",
            "--config",
            cfg.to_str().unwrap(),
            "--telegram-token",
            TG,
            "--allow-telegram",
            "7",
        ],
    ));
    assert!(text(&out).contains("metrod reloaded it"), "{}", text(&out));
    // It says what metrod did with it: the telegram station now runs on
    // the new token (its status, whatever Telegram answered).
    assert!(
        text(&out).contains("applied it: the telegram station is "),
        "{}",
        text(&out)
    );
    assert_eq!(station_row(&d, "telegram")["enabled"], json!(true));
    assert_eq!(stats_config(&d)["telegram"]["token"], json!(true));
}

#[test]
fn setup_on_a_terminal_asks_without_echo() {
    // A pseudo-terminal (python3's pty) plays the user; everything the
    // terminal showed is returned and must not contain the token.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    let script = r#"
import os, pty, select, sys, termios, time
ctl, cfg, sock, token = sys.argv[1:5]
pid, fd = pty.fork()
if pid == 0:
    os.execv(ctl, [ctl, "--socket", sock, "setup", "--config", cfg])
seen = b""
pos = 0
def until(marker, limit=15):
    # Waits for `marker` in what came after the last one found.
    global seen, pos
    end = time.time() + limit
    while marker not in seen[pos:]:
        if time.time() > end:
            sys.stdout.write(seen.decode(errors="replace")); sys.exit("timeout waiting for %r" % marker)
        if not select.select([fd], [], [], 0.1)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            sys.stdout.write(seen.decode(errors="replace")); sys.exit("ended before %r" % marker)
        seen += chunk
    pos = seen.index(marker, pos) + len(marker)
def answer(marker, text, secret=False):
    until(marker)
    if secret:
        # The prompt is written before echo is turned off: wait for that,
        # as a person typing would (and fail if it never happens).
        end = time.time() + 15
        while termios.tcgetattr(fd)[3] & termios.ECHO:
            if time.time() > end:
                sys.exit("echo stayed on for a token prompt")
            time.sleep(0.01)
    os.write(fd, text.encode() + b"\r")
answer(b"Telegram bot token", "12:short", secret=True)
until(b"35")
answer(b"Telegram bot token", token, secret=True)
answer(b"Telegram user ids", "42")
answer(b"Discord bot token", "", secret=True)
answer(b"Discord user ids", "")
until(b"wrote")
try:
    while True:
        chunk = os.read(fd, 4096)
        if not chunk: break
        seen += chunk
except OSError:
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(METROCTL)
        .arg(&cfg)
        .arg(tmp.path().join("none.sock"))
        .arg(TG)
        .env("HOME", tmp.path())
        .env_remove("METRO_TELEGRAM_TOKEN")
        .output()
        .expect("python3");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{screen}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !screen.contains(TG_SECRET),
        "the token was echoed: {screen}"
    );
    assert!(screen.contains("1234…wq"), "{screen}");
    let written: toml::Value = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    assert_eq!(written["telegram"]["token"].as_str(), Some(TG));
    assert_eq!(written["telegram"]["allow"][0].as_str(), Some("42"));
    assert_eq!(mode(&cfg), 0o600);
}

// ---------------------------------------------------------------- completions

#[test]
fn completions_for_each_shell() {
    let tmp = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = run_ok(&mut ctl(tmp.path(), &["completions", shell]));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.len() > 1000, "{shell}: {script}");
        assert!(script.contains("metroctl"), "{shell}");
        assert!(
            script.contains("service") && script.contains("doctor"),
            "{shell}"
        );
    }
    let out = ctl(tmp.path(), &["completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success());
}
