//! Hardening (issue 14, item 2): an error about the config file names the
//! file, line, column and key, never a value — a typo next to a token must
//! not put the token in metrod's log, in `stats`, or in `setup`/`doctor`
//! output.

mod common;

use common::svc::*;
use common::*;
use serde_json::json;

/// Broken configs, each with the token on the broken line, and the line
/// and key the error must name.
fn broken() -> Vec<(String, &'static str, &'static str)> {
    vec![
        // No quotes around the token.
        (
            format!("[telegram]\ntoken = {TG}\n"),
            "line 2",
            "key `token`",
        ),
        // A key metro does not know.
        (
            format!("[telegram]\nallow = [\"1\"]\nbot_token = \"{TG}\"\n"),
            "line 3",
            "key `bot_token`",
        ),
        // A value of the wrong type.
        (
            format!("[telegram]\ntoken = [\"{TG}\"]\n"),
            "line 2",
            "key `token`",
        ),
    ]
}

#[test]
fn metrod_refuses_a_broken_config_without_quoting_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    for (body, line, key) in broken() {
        write_config(&cfg, &body, 0o600);
        let out = metrod_with_config(&tmp.path().join("state"), &cfg);
        assert_eq!(out.status.code(), Some(78), "{}", text(&out));
        let err = text(&out);
        assert!(!err.contains(TG_SECRET), "token shown: {err}");
        assert!(!err.contains("123456789"), "token shown: {err}");
        assert!(err.contains(&cfg.display().to_string()), "{err}");
        assert!(err.contains(line) && err.contains(key), "{err}");
        assert!(err.contains("column"), "{err}");
    }
}

#[test]
fn a_broken_reload_is_not_quoted_in_stats_or_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    write_config(&cfg, &config_body(TG2, &["1"]), 0o600);
    let d = Daemon::start_in(
        &tmp.path().join("state"),
        &["--config", cfg.to_str().unwrap(), "--no-config-watch"],
    );
    for (i, (body, line, key)) in broken().into_iter().enumerate() {
        write_config(&cfg, &body, 0o600);
        signal(d.pid(), nix::sys::signal::Signal::SIGHUP);
        let c = wait_config(&d, "bad reload", |c| {
            c["error"].is_string() && c["reloads"] == json!(0) && {
                // Each rejection replaces the error: wait for this one.
                c["error"].as_str().unwrap().contains(key)
            }
        });
        let e = c["error"].as_str().unwrap();
        assert!(
            !e.contains(TG_SECRET) && !e.contains("123456789"),
            "{i}: {e}"
        );
        assert!(e.contains(line), "{e}");
    }
    let log = d.stderr();
    assert!(log.contains("config change rejected"), "{log}");
    assert!(!log.contains(TG_SECRET), "token logged: {log}");
}

#[test]
fn setup_and_doctor_do_not_quote_a_broken_config() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let cfg = tmp.path().join("config.toml");
    let none = tmp.path().join("none.sock");
    for (body, line, key) in broken() {
        write_config(&cfg, &body, 0o600);
        let out = ctl(
            &home,
            &[
                "--socket",
                none.to_str().unwrap(),
                "setup",
                "--config",
                cfg.to_str().unwrap(),
                "--allow-telegram",
                "42",
            ],
        )
        .output()
        .unwrap();
        assert!(!out.status.success());
        let said = text(&out);
        assert!(!said.contains(TG_SECRET), "setup quoted the token: {said}");
        assert!(said.contains(line) && said.contains(key), "{said}");
        let out = ctl(&home, &["--socket", none.to_str().unwrap(), "doctor"])
            .env("METRO_CONFIG", &cfg)
            .output()
            .unwrap();
        let said = text(&out);
        assert!(!said.contains(TG_SECRET), "doctor quoted the token: {said}");
        assert!(said.contains(line), "{said}");
    }
}

#[test]
fn secrets_come_from_stdin_a_file_or_the_environment_and_argv_warns() {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let sock = d.socket.to_str().unwrap().to_string();
    // From the environment: no warning.
    let out = ctl(
        &home,
        &[
            "--socket",
            &sock,
            "webhook",
            "add",
            "a",
            "--secret",
            "env:HOOK_SECRET",
        ],
    )
    .env("HOOK_SECRET", "s3cret-from-env")
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("warning"), "{}", text(&out));
    // From a file: no warning.
    let file = tmp.path().join("secret");
    std::fs::write(&file, "s3cret-from-file\n").unwrap();
    let at = format!("@{}", file.display());
    let out = ctl(
        &home,
        &["--socket", &sock, "webhook", "add", "b", "--secret", &at],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("warning"), "{}", text(&out));
    // On the command line: still works, with a one-line warning.
    let out = ctl(
        &home,
        &[
            "--socket",
            &sock,
            "webhook",
            "add",
            "c",
            "--secret",
            "s3cret-in-argv",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().filter(|l| l.contains("warning")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("ps"), "{err}");
    let list = ctl_ok(&d, &["webhook", "list", "--json"]);
    assert_eq!(list.matches("\"hasSecret\":true").count(), 3, "{list}");
    // setup reads a token from the environment without a warning.
    let cfg = tmp.path().join("config.toml");
    let out = ctl(
        &home,
        &[
            "--socket",
            tmp.path().join("none.sock").to_str().unwrap(),
            "setup",
            "--config",
            cfg.to_str().unwrap(),
            "--telegram-token",
            "env:TG",
        ],
    )
    .env("TG", TG)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("warning"), "{}", text(&out));
    assert!(std::fs::read_to_string(&cfg).unwrap().contains(TG));
}

/// The sections of a config are the core's and the registered stations':
/// an unknown one (a typo, a station this build does not have) stops
/// metrod at startup and is refused on reload, naming the known sections
/// and never quoting the file.
#[test]
fn an_unknown_section_is_refused_naming_the_known_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    let bad = format!("[telegram]\nallow = [\"1\"]\n\n[slack]\ntoken = \"{TG}\"\n");
    write_config(&cfg, &bad, 0o600);
    let out = metrod_with_config(&tmp.path().join("state"), &cfg);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = text(&out);
    assert!(err.contains("unknown section [slack]"), "{err}");
    assert!(
        err.contains("the known sections are [telegram], [discord], [monitor], [cluster]"),
        "{err}"
    );
    assert!(err.contains(&cfg.display().to_string()), "{err}");
    assert!(!err.contains(TG_SECRET), "token shown: {err}");

    // The same on reload: rejected, the config in force stays.
    write_config(&cfg, &config_body(TG2, &["1"]), 0o600);
    let d = Daemon::start_in(
        &tmp.path().join("state"),
        &["--config", cfg.to_str().unwrap(), "--no-config-watch"],
    );
    write_config(&cfg, &bad, 0o600);
    signal(d.pid(), nix::sys::signal::Signal::SIGHUP);
    let c = wait_config(&d, "rejected reload", |c| c["error"].is_string());
    let e = c["error"].as_str().unwrap();
    assert!(e.contains("unknown section [slack]"), "{e}");
    assert!(!e.contains(TG_SECRET), "{e}");
    assert_eq!(c["reloads"], json!(0), "{c}");
    assert_eq!(c["telegram"]["token"], json!(true), "{c}");
}
