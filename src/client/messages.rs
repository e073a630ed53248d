//! What agents say on lines: `metroctl send`, `reply`, `edit`, `react`,
//! `download`, `fetch`, the file and button flags `send` and `reply`
//! share, and the access commands `allow` and `deny`.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};

use super::args::{absolute, actor, buttons_arg, line_arg, no_claim, text_arg};
use super::conn::{self, Connection};
use super::output::{fields_only, paint, print_json, style};
use super::{output, CliError, Identity};
use crate::proto::{self, Request};

/// Files and buttons of `send` / `reply`.
#[derive(Debug, Args, Clone, Default)]
pub struct AttachArgs {
    /// An image to send (repeatable; several make one album).
    #[arg(long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,
    /// A document to send (repeatable; several make one album).
    #[arg(long = "document", value_name = "PATH")]
    pub documents: Vec<PathBuf>,
    /// A voice message (an OGG/Opus file).
    #[arg(long, value_name = "PATH")]
    pub voice: Option<PathBuf>,
    /// Inline buttons, JSON: `["Yes","No"]`, or rows
    /// `[[{"text":"Open","url":"https://…"}],[{"text":"Done","data":"done"}]]`.
    #[arg(long, value_name = "JSON")]
    pub buttons: Option<String>,
}

impl AttachArgs {
    /// Adds `images`, `documents`, `voice`, `buttons` to a `send` request.
    pub fn apply(&self, req: &mut proto::Send) -> Result<(), CliError> {
        let all = |paths: &[PathBuf]| -> Result<Option<Vec<String>>, CliError> {
            if paths.is_empty() {
                return Ok(None);
            }
            paths
                .iter()
                .map(|p| absolute(p))
                .collect::<Result<_, _>>()
                .map(Some)
        };
        req.images = all(&self.images)?;
        req.documents = all(&self.documents)?;
        req.voice = self.voice.as_deref().map(absolute).transpose()?;
        req.buttons = buttons_arg(&self.buttons)?;
        Ok(())
    }

    fn has_files(&self) -> bool {
        !self.images.is_empty() || !self.documents.is_empty() || self.voice.is_some()
    }
}

#[derive(Debug, Args)]
pub struct ReplyArgs {
    /// The line (e.g. telegram/42, discord/<channelId>, claude/user/<id>).
    pub line: String,
    /// The message replied to: a metro id (msg_…) or the platform's id.
    pub message_id: String,
    /// The text (`-` reads stdin; may be empty with files).
    #[arg(default_value = "")]
    pub text: String,
    #[command(flatten)]
    pub attach: AttachArgs,
    #[command(flatten)]
    pub who: Identity,
    /// Do not claim the line (also METRO_NO_AUTO_CLAIM=1).
    #[arg(long)]
    pub no_claim: bool,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The line (e.g. telegram/42, discord/<channelId>, claude/user/<id>).
    pub line: String,
    /// The text (`-` reads stdin; may be empty with files).
    pub text: String,
    #[command(flatten)]
    pub who: Identity,
    /// Do not claim the line (also METRO_NO_AUTO_CLAIM=1).
    #[arg(long)]
    pub no_claim: bool,
    /// Message id this replies to.
    #[arg(long, value_name = "ID")]
    pub reply_to: Option<String>,
    #[command(flatten)]
    pub attach: AttachArgs,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    /// The line (e.g. telegram/42, discord/<channelId>, claude/user/<id>).
    pub line: String,
    /// The message: a metro id (msg_…) or the platform's id (as `tail` shows it).
    pub message_id: String,
    /// The new text (`-` reads stdin).
    pub text: String,
    #[command(flatten)]
    pub who: Identity,
    /// Do not claim the line (also METRO_NO_AUTO_CLAIM=1).
    #[arg(long)]
    pub no_claim: bool,
    /// New inline buttons (JSON, as for send).
    #[arg(long, value_name = "JSON")]
    pub buttons: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReactArgs {
    /// The line (e.g. telegram/42, discord/<channelId>, claude/user/<id>).
    pub line: String,
    /// The message: a metro id (msg_…) or the platform's id (as `tail` shows it).
    pub message_id: String,
    /// The emoji (`""` clears this identity's reaction).
    pub emoji: String,
    #[command(flatten)]
    pub who: Identity,
    /// Do not claim the line (also METRO_NO_AUTO_CLAIM=1).
    #[arg(long)]
    pub no_claim: bool,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The line (e.g. telegram/42, discord/<channelId>, claude/user/<id>).
    pub line: String,
    /// The message whose files to save: a metro id or the platform's id.
    pub message_id: String,
    /// Directory to save into (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The line (e.g. telegram/42, discord/<channelId>, claude/user/<id>).
    pub line: String,
    /// How many messages (1..100), oldest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u64,
    /// Print JSON even on a terminal (piped output is JSON already).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AllowArgs {
    /// The pairing code the person got from the bot.
    #[arg(required_unless_present = "list")]
    pub code: Option<String>,
    /// Show who is admitted, denied, and waiting with a code.
    #[arg(long, conflicts_with = "code")]
    pub list: bool,
    /// Only this station (telegram, discord).
    #[arg(long)]
    pub station: Option<String>,
    /// Print JSON even on a terminal (piped output is JSON already).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DenyArgs {
    /// The platform user id (as `allow --list` shows it).
    pub user_id: String,
    /// The station (telegram, discord) [default: the one running]
    #[arg(long)]
    pub station: Option<String>,
}

/// Sends a write (`send`, `edit`, `react`) under an idempotency key,
/// prints the answer, and says on stderr when the auto-claim was skipped.
fn write(socket: &Path, req: Request, printer: impl Fn(&Value)) -> Result<(), CliError> {
    let line = match &req {
        Request::Send(s) => s.line.clone(),
        Request::Edit(e) => e.line.clone(),
        Request::React(r) => r.line.clone(),
        _ => String::new(),
    };
    let answer = conn::call_once(socket, req)?;
    printer(&answer);
    report_skipped_claim(socket, &line, &answer);
    Ok(())
}

/// After a `send`, `edit` or `react` whose auto-claim was skipped, says on
/// stderr who owns the line (as the TypeScript metro did).
fn report_skipped_claim(socket: &Path, line: &str, answer: &Value) {
    if answer["claim"] != json!("skipped") {
        return;
    }
    let owner = match answer["owner"].as_str() {
        Some(o) => Some(o.to_string()),
        None => Connection::open(socket)
            .and_then(|mut c| c.call(&Request::Claims))
            .ok()
            .and_then(|c| c["claims"][line].as_str().map(String::from)),
    };
    eprintln!(
        "auto-claim skipped: line owned by {}",
        owner.as_deref().unwrap_or("someone else")
    );
}

/// On a terminal `f`, else the answer's fields as JSON.
fn human(f: impl Fn(&Value)) -> impl Fn(&Value) {
    move |a| {
        if output::json_mode(false) {
            print_json(&fields_only(a));
        } else {
            f(a)
        }
    }
}

/// The id `reply`, `edit` and `react` take for the message an answer
/// names: the platform's when there is one, else metro's.
fn message_id(a: &Value) -> &str {
    a["messageId"]
        .as_str()
        .or(a["id"].as_str())
        .unwrap_or_default()
}

/// `send` on a terminal: `notified L`, as the TypeScript metro said it,
/// and the message's id.
fn sent(line: &str) -> impl Fn(&Value) + '_ {
    human(move |a| {
        output::say(format!(
            "notified {line} · id {}",
            paint(style::ID, message_id(a))
        ))
    })
}

pub fn send(socket: &Path, a: SendArgs) -> Result<(), CliError> {
    let mut req = proto::Send {
        line: line_arg(&a.line)?,
        text: text_arg(a.text)?,
        from: actor(a.who.as_.as_deref())?,
        reply_to: a.reply_to,
        no_claim: Some(no_claim(a.no_claim)),
        ..Default::default()
    };
    a.attach.apply(&mut req)?;
    let line = req.line.clone();
    write(socket, Request::Send(req), sent(&line))
}

pub fn reply(socket: &Path, a: ReplyArgs) -> Result<(), CliError> {
    let text = text_arg(a.text)?;
    if text.is_empty() && !a.attach.has_files() {
        return Err(CliError::Usage(
            "reply needs a TEXT, or files (--image, --document, --voice)".into(),
        ));
    }
    let mut req = proto::Send {
        line: line_arg(&a.line)?,
        text,
        from: actor(a.who.as_.as_deref())?,
        reply_to: Some(a.message_id),
        no_claim: Some(no_claim(a.no_claim)),
        ..Default::default()
    };
    a.attach.apply(&mut req)?;
    let line = req.line.clone();
    write(socket, Request::Send(req), sent(&line))
}

pub fn edit(socket: &Path, a: EditArgs) -> Result<(), CliError> {
    let req = proto::Edit {
        line: line_arg(&a.line)?,
        message_id: a.message_id,
        text: text_arg(a.text)?,
        from: actor(a.who.as_.as_deref())?,
        buttons: buttons_arg(&a.buttons)?,
        no_claim: Some(no_claim(a.no_claim)),
        idempotency_key: None,
    };
    let (line, id) = (req.line.clone(), req.message_id.clone());
    let printer = human(|_| output::say(format!("edited {} on {line}", paint(style::ID, &id))));
    write(socket, Request::Edit(req), printer)
}

pub fn react(socket: &Path, a: ReactArgs) -> Result<(), CliError> {
    let req = proto::React {
        line: line_arg(&a.line)?,
        message_id: a.message_id,
        emoji: a.emoji,
        from: actor(a.who.as_.as_deref())?,
        no_claim: Some(no_claim(a.no_claim)),
        idempotency_key: None,
    };
    let (line, id, emoji) = (req.line.clone(), req.message_id.clone(), req.emoji.clone());
    let printer = human(|_| {
        let id = paint(style::ID, &id);
        if emoji.is_empty() {
            output::say(format!("cleared the reaction on {id} on {line}"))
        } else {
            output::say(format!("reacted {emoji} to {id} on {line}"))
        }
    });
    write(socket, Request::React(req), printer)
}

pub fn download(socket: &Path, a: DownloadArgs) -> Result<(), CliError> {
    let req = Request::Download(proto::Download {
        line: line_arg(&a.line)?,
        message_id: a.message_id,
        out_dir: absolute(&a.out)?,
    });
    let answer = Connection::open(socket)?.call(&req)?;
    // One path a line, for scripts; `--json` gives the answer's fields.
    if output::json_forced() {
        print_json(&fields_only(&answer));
        return Ok(());
    }
    for f in answer["files"].as_array().into_iter().flatten() {
        println!("{}", f.as_str().unwrap_or_default());
    }
    Ok(())
}

pub fn fetch(socket: &Path, a: FetchArgs) -> Result<(), CliError> {
    let req = Request::Fetch(proto::Fetch {
        line: line_arg(&a.line)?,
        limit: Some(a.limit),
    });
    let answer = Connection::open(socket)?.call(&req)?;
    let messages = answer["messages"].as_array().cloned().unwrap_or_default();
    if output::json_mode(a.json) {
        messages.iter().for_each(print_json);
        return Ok(());
    }
    if messages.is_empty() {
        output::note("no messages on this line");
        return Ok(());
    }
    let rows = output::EventRows::new(false);
    output::say(rows.header());
    for m in &messages {
        output::say(rows.row(m));
    }
    Ok(())
}

pub fn allow(socket: &Path, a: AllowArgs) -> Result<(), CliError> {
    let mut conn = Connection::open(socket)?;
    let Some(code) = a.code.filter(|_| !a.list) else {
        let req = Request::AllowList(proto::AllowListQuery { station: a.station });
        let answer = conn.call(&req)?;
        print_list(&answer, output::json_mode(a.json));
        return Ok(());
    };
    let req = Request::Allow(proto::AllowCode {
        code,
        station: a.station,
    });
    let answer = conn.call(&req)?;
    if output::json_mode(a.json) {
        print_json(&fields_only(&answer));
    } else {
        output::say(format!(
            "admitted {} user {}{}",
            answer["station"].as_str().unwrap_or(""),
            answer["userId"].as_str().unwrap_or(""),
            answer["name"]
                .as_str()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ));
    }
    Ok(())
}

pub fn deny(socket: &Path, a: DenyArgs) -> Result<(), CliError> {
    let req = Request::Deny(proto::DenyUser {
        user_id: a.user_id,
        station: a.station,
    });
    let answer = Connection::open(socket)?.call(&req)?;
    human(|a| {
        let before = if a["wasAllowed"] == json!(true) {
            " (admitted until now)"
        } else {
            ""
        };
        output::say(format!(
            "denied {} user {}{before}",
            a["station"].as_str().unwrap_or(""),
            a["userId"].as_str().unwrap_or("")
        ))
    })(&answer);
    Ok(())
}

fn print_list(answer: &Value, json: bool) {
    let stations = answer["access"].as_array().cloned().unwrap_or_default();
    if json {
        stations.iter().for_each(print_json);
        return;
    }
    if stations.is_empty() {
        output::note("no chat station is running");
        return;
    }
    let str_of = |v: &Value, k: &str| v[k].as_str().unwrap_or("-").to_string();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for st in &stations {
        let name = str_of(st, "station");
        if st["everyone"] == json!(true) {
            rows.push(vec![
                name.clone(),
                "*".into(),
                "-".into(),
                "everyone (config)".into(),
                "-".into(),
            ]);
        }
        for id in st["config"].as_array().into_iter().flatten() {
            let id = id.as_str().unwrap_or_default().to_string();
            rows.push(vec![
                name.clone(),
                id,
                "-".into(),
                "allowed (config)".into(),
                "-".into(),
            ]);
        }
        for (key, what, at) in [
            ("allowed", "allowed (code)", "at"),
            ("denied", "denied", "at"),
            ("pending", "waiting with a code", "expiresAt"),
        ] {
            for p in st[key].as_array().into_iter().flatten() {
                rows.push(vec![
                    name.clone(),
                    str_of(p, "userId"),
                    str_of(p, "name"),
                    what.into(),
                    str_of(p, at),
                ]);
            }
        }
    }
    output::say(output::table(
        &["STATION", "USER", "NAME", "STATUS", "SINCE/UNTIL"],
        &rows,
    ));
}
