//! The long texts of `metroctl --help`: who you act as, and the examples
//! every subcommand's help ends with (`after_help`). Each example is a
//! command line that works as printed; tests/help.rs parses every one.

/// How metroctl finds the identity it acts as (top-level help).
macro_rules! identity {
    () => {
        "\
Who you act as (--as; --from is an alias), in this order:
  1. --as URI, e.g. --as claude/user/me (metro://user means nobody)
  2. $METRO_AS
  3. Claude Code (CLAUDECODE is set): metro://claude/user/<id>
  4. Codex (CODEX_HOME or METRO_CODEX_RC is set): metro://codex/user/<id>
  <id> is $METRO_USER_ID when set; else Claude Code's orgId (`claude auth
  status --json`) or Codex's tokens.account_id ($CODEX_HOME/auth.json);
  else $USER. Without any of these, commands that need an identity say so.
Output is JSON when piped or with --json, sentences and tables on a
terminal (METRO_OUTPUT=human|json decides instead; NO_COLOR turns colors off)."
    };
}

macro_rules! examples {
    ($($line:literal),+ $(,)?) => {
        concat!("Examples:", $("\n  ", $line),+, "\n")
    };
}

pub const IDENTITY: &str = identity!();
pub const TOP: &str = examples!(
    "metroctl tail --follow",
    "metroctl send telegram/42 'on it' --as claude/user/me",
    "metroctl doctor",
);
/// `metroctl --help`: who you act as, then the examples.
pub const TOP_LONG: &str = concat!(
    identity!(),
    "\n\n",
    examples!(
        "metroctl tail --follow",
        "metroctl send telegram/42 'on it' --as claude/user/me",
        "metroctl doctor",
    )
);
pub const HELLO: &str = examples!("metroctl hello", "metroctl hello --json");
pub const STATUS: &str = examples!(
    "metroctl status",
    "metroctl whoami --as claude/user/me",
    "metroctl status --json",
);
pub const START: &str = examples!("metroctl start", "metroctl start -- --fsync never");
pub const STOP: &str = examples!(
    "metroctl stop",
    "metroctl --socket /tmp/metro/metro.sock stop",
);
pub const TAIL: &str = examples!(
    "metroctl tail --as claude/user/me",
    "metroctl tail --follow --all",
    "metroctl tail --since start --limit 20 --chat telegram/42",
    "metroctl tail --since 10m --all",
);
pub const CLAIM: &str = examples!(
    "metroctl claim telegram/42 --as claude/user/me",
    "metroctl claim discord/1234567890 --if-free",
);
pub const RELEASE: &str = examples!(
    "metroctl release telegram/42",
    "metroctl release discord/1234567890"
);
pub const CLAIMS: &str = examples!("metroctl claims", "metroctl claims --json");
pub const SEND: &str = examples!(
    "metroctl send telegram/42 'build is green' --as claude/user/me",
    "metroctl send claude/user/other 'your turn' --no-claim",
    "metroctl send telegram/42 - --document report.pdf",
);
pub const REPLY: &str = examples!(
    "metroctl reply telegram/42 913 'looking now'",
    "metroctl reply discord/1234567890 msg_1a2202bf6e93f2b45 'done' --image shot.png",
);
pub const EDIT: &str = examples!(
    "metroctl edit telegram/42 913 'build is red, fixing'",
    "metroctl edit telegram/42 913 'pick one' --buttons '[\"Yes\",\"No\"]'",
);
pub const REACT: &str = examples!(
    "metroctl react telegram/42 913 👍",
    "metroctl react telegram/42 913 ''",
);
pub const DOWNLOAD: &str = examples!(
    "metroctl download telegram/42 913",
    "metroctl download discord/1234567890 msg_1a2202bf6e93f2b45 --out /tmp/files",
);
pub const FETCH: &str = examples!(
    "metroctl fetch telegram/42",
    "metroctl fetch discord/1234567890 --limit 50 --json",
);
pub const ALLOW: &str = examples!(
    "metroctl allow 4F7K2Q",
    "metroctl allow --list",
    "metroctl allow 4F7K2Q --station discord",
);
pub const DENY: &str = examples!(
    "metroctl deny 581234907",
    "metroctl deny 581234907 --station telegram"
);
pub const HISTORY: &str = examples!(
    "metroctl history --line telegram/42 --limit 20",
    "metroctl history --text deploy --since 2026-11-28T00:00:00Z",
    "metroctl history --kind inbound --station discord --json",
);
pub const LINES: &str = examples!("metroctl lines", "metroctl lines --json");
pub const STATIONS: &str = examples!("metroctl stations", "metroctl stations --json");
pub const STATS: &str = examples!("metroctl stats", "metroctl stats --json");
pub const CURSOR: &str = examples!(
    "metroctl cursor --as claude/user/me",
    "metroctl cursor --cursor nightly-report",
);
pub const PUBLISH: &str = examples!(
    "metroctl publish '{\"line\":\"local/demo\",\"text\":\"hello\"}'",
    "metroctl publish - # reads the event from stdin",
);
pub const WEBHOOK: &str = examples!(
    "metroctl webhook add github --secret env:GITHUB_SECRET",
    "metroctl webhook list",
);
pub const WEBHOOK_ADD: &str = examples!(
    "metroctl webhook add github --secret env:GITHUB_SECRET",
    "metroctl webhook add ci",
);
pub const WEBHOOK_LIST: &str = examples!("metroctl webhook list", "metroctl webhook list --json");
pub const WEBHOOK_REMOVE: &str = examples!(
    "metroctl webhook remove psixzwxolvcvkmazonyiua6cyi",
    "metroctl webhook remove psixzwxolvcvkmazonyiua6cyi --json",
);
pub const TUNNEL: &str = examples!(
    "metroctl tunnel setup metro hooks.example.com",
    "metroctl tunnel check",
);
pub const TUNNEL_SETUP: &str = examples!(
    "metroctl tunnel setup metro hooks.example.com",
    "metroctl tunnel setup metro hooks.example.com --force",
);
pub const TUNNEL_CHECK: &str = examples!(
    "metroctl tunnel check",
    "metroctl tunnel check metro --json"
);
pub const DOCTOR: &str = examples!(
    "metroctl doctor",
    "metroctl doctor metro # of the tunnels, checks only the one named metro",
    "metroctl doctor --json",
);
pub const SERVICE: &str = examples!("metroctl service install", "metroctl service status");
pub const SERVICE_INSTALL: &str = examples!(
    "metroctl service install",
    "metroctl service install --manager launchd",
);
pub const SERVICE_UNINSTALL: &str = examples!(
    "metroctl service uninstall",
    "metroctl service uninstall --manager launchd",
);
pub const SERVICE_STATUS: &str =
    examples!("metroctl service status", "metroctl service status --json");
pub const SETUP: &str = examples!(
    "metroctl setup",
    "metroctl setup --telegram-token env:TELEGRAM_TOKEN --allow-telegram 581234907",
    "metroctl setup --monitor",
);
pub const MCP: &str = examples!(
    "metroctl mcp",
    "metroctl mcp --as claude/user/me --permission-relay --approver telegram/42",
);
pub const TOP_VIEW: &str = examples!(
    "metroctl top",
    "metroctl top --filter telegram",
    "metroctl --socket /tmp/metro/metro.sock top",
);
pub const COMPLETIONS: &str = examples!(
    "metroctl completions bash > ~/.local/share/bash-completion/completions/metroctl",
    "metroctl completions zsh > ~/.zfunc/_metroctl",
);
