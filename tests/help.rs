//! metroctl's help (issue 16): clap's own consistency checks, every
//! argument and flag described, every subcommand's help ending with
//! examples, and the examples themselves valid command lines.

use clap::CommandFactory;
use metro::client::Cli;

/// Every subcommand, depth first, with its path (`metroctl webhook add`).
fn walk(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let p = format!("{path} {}", sub.get_name());
        out.push((p.clone(), sub.clone()));
        walk(sub, p, out);
    }
}

fn commands() -> Vec<(String, clap::Command)> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, "metroctl".into(), &mut out);
    out
}

#[test]
fn clap_finds_nothing_wrong() {
    Cli::command().debug_assert();
}

#[test]
fn every_argument_and_flag_has_a_description() {
    let mut missing = Vec::new();
    let mut top = Cli::command();
    top.build();
    let all = std::iter::once(("metroctl".to_string(), top)).chain(commands());
    for (path, cmd) in all {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            if help.trim().is_empty() {
                missing.push(format!("{path}: {id}"));
            }
        }
        if cmd.get_about().is_none() && path != "metroctl" {
            missing.push(format!("{path}: (no about)"));
        }
    }
    assert!(
        missing.is_empty(),
        "without a description:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_subcommand_ends_with_examples_that_parse() {
    let mut problems = Vec::new();
    for (path, cmd) in commands() {
        let after = cmd
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        let Some(examples) = after.split("Examples:").nth(1) else {
            problems.push(format!("{path}: no Examples section"));
            continue;
        };
        let lines: Vec<&str> = examples
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("metroctl "))
            .collect();
        if !(2..=4).contains(&lines.len()) && cmd.get_subcommands().next().is_none() {
            problems.push(format!("{path}: {} examples", lines.len()));
        }
        for l in lines {
            // The command part of an example (before a pipe, a redirect or
            // a comment) is a valid metroctl command line.
            let line = l.split(['|', '>', '#']).next().unwrap_or(l).trim();
            let words = shell_words(line);
            match Cli::command().try_get_matches_from(&words) {
                Err(e) => problems.push(format!("{path}: `{l}` does not parse: {e}")),
                Ok(m) => {
                    // The subcommand the example runs is this one.
                    let mut ran = "metroctl".to_string();
                    let mut m = &m;
                    while let Some((name, sub)) = m.subcommand() {
                        ran = format!("{ran} {name}");
                        m = sub;
                    }
                    // (A group's examples run its subcommands.)
                    if ran != path && !ran.starts_with(&format!("{path} ")) {
                        problems.push(format!("{path}: `{l}` runs `{ran}`"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn version_only_at_the_top() {
    let top = Cli::command();
    assert!(top.get_version().is_some());
    let err = Cli::command()
        .try_get_matches_from(["metroctl", "claims", "-V"])
        .unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
}

#[test]
fn help_explains_who_you_act_as() {
    let help = Cli::command().render_long_help().to_string();
    for word in [
        "--as",
        "METRO_AS",
        "CLAUDECODE",
        "CODEX_HOME",
        "METRO_USER_ID",
    ] {
        assert!(
            help.contains(word),
            "top-level help does not mention {word}:\n{help}"
        );
    }
}

/// Splits an example like a shell would, for the quoting the examples use.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut has = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                has = true;
            }
            (None, c) if c.is_whitespace() => {
                if has || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if has || !cur.is_empty() {
        words.push(cur);
    }
    words
}
