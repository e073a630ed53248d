//! `metroctl reply`, `download`, `fetch`, `allow`, `deny`, and the file and
//! button flags that `send` and `reply` share.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};

use super::commands::{
    actor, fields_only, line_arg, no_claim, print_json, read_stdin, report_skipped_claim,
    sent_printer,
};
use super::conn::Connection;
use super::{output, CliError};

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

/// A path as the daemon must see it: absolute (its working directory is
/// not ours).
fn absolute(p: &Path) -> Result<String, CliError> {
    std::path::absolute(p)
        .map(|a| a.display().to_string())
        .map_err(|e| CliError::Usage(format!("{}: {e}", p.display())))
}

pub(super) fn buttons_arg(b: &Option<String>) -> Result<Option<Value>, CliError> {
    b.as_deref()
        .map(|b| {
            serde_json::from_str(b)
                .map_err(|e| CliError::Usage(format!("--buttons is not JSON: {e}")))
        })
        .transpose()
}

impl AttachArgs {
    /// Adds `images`, `documents`, `voice`, `buttons` to a `send` request.
    pub fn apply(&self, req: &mut Value) -> Result<(), CliError> {
        if !self.images.is_empty() {
            req["images"] = json!(self
                .images
                .iter()
                .map(|p| absolute(p))
                .collect::<Result<Vec<_>, _>>()?);
        }
        if !self.documents.is_empty() {
            req["documents"] = json!(self
                .documents
                .iter()
                .map(|p| absolute(p))
                .collect::<Result<Vec<_>, _>>()?);
        }
        if let Some(v) = &self.voice {
            req["voice"] = json!(absolute(v)?);
        }
        if let Some(b) = buttons_arg(&self.buttons)? {
            req["buttons"] = b;
        }
        Ok(())
    }

    fn has_files(&self) -> bool {
        !self.images.is_empty() || !self.documents.is_empty() || self.voice.is_some()
    }
}

#[derive(Debug, Args)]
pub struct ReplyArgs {
    pub line: String,
    /// The message replied to: a metro id (msg_…) or the platform's id.
    pub message_id: String,
    /// The text (`-` reads stdin; may be empty with files).
    #[arg(default_value = "")]
    pub text: String,
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Sender identity [default: as for --as]
    #[arg(long, value_name = "URI")]
    pub from: Option<String>,
    /// Do not claim the line (also METRO_NO_AUTO_CLAIM=1).
    #[arg(long)]
    pub no_claim: bool,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    pub line: String,
    /// The message whose files to save: a metro id or the platform's id.
    pub message_id: String,
    /// Directory to save into (created if missing) [default: .]
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    pub line: String,
    /// How many messages (1..100), oldest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u64,
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

pub fn reply(socket: &Path, a: ReplyArgs) -> Result<(), CliError> {
    let text = if a.text == "-" { read_stdin()? } else { a.text };
    if text.is_empty() && !a.attach.has_files() {
        return Err(CliError::Usage(
            "reply needs a TEXT, or files (--image, --document, --voice)".into(),
        ));
    }
    let mut req = json!({
        "op": "send",
        "line": line_arg(&a.line)?,
        "text": text,
        "replyTo": a.message_id,
        "noClaim": no_claim(a.no_claim),
    });
    if let Some(f) = actor(a.from)? {
        req["from"] = json!(f);
    }
    a.attach.apply(&mut req)?;
    let answer = super::conn::call_once(socket, req.clone())?;
    sent_printer(req["line"].as_str().unwrap_or_default().to_string())(&answer);
    report_skipped_claim(socket, &req, &answer);
    Ok(())
}

pub fn download(socket: &Path, a: DownloadArgs) -> Result<(), CliError> {
    let req = json!({
        "op": "download",
        "line": line_arg(&a.line)?,
        "messageId": a.message_id,
        "outDir": absolute(&a.out)?,
    });
    let answer = Connection::open(socket)?.call(req)?;
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
    let req = json!({"op": "fetch", "line": line_arg(&a.line)?, "limit": a.limit});
    let answer = Connection::open(socket)?.call(req)?;
    for m in answer["messages"].as_array().into_iter().flatten() {
        if output::json_mode(a.json) {
            print_json(m);
        } else {
            println!("{}", output::event_row(m));
        }
    }
    Ok(())
}

pub fn allow(socket: &Path, a: AllowArgs) -> Result<(), CliError> {
    let mut conn = Connection::open(socket)?;
    let Some(code) = a.code.filter(|_| !a.list) else {
        let mut req = json!({"op": "allowList"});
        if let Some(s) = &a.station {
            req["station"] = json!(s);
        }
        let answer = conn.call(req)?;
        print_list(&answer, output::json_mode(a.json));
        return Ok(());
    };
    let mut req = json!({"op": "allow", "code": code});
    if let Some(s) = &a.station {
        req["station"] = json!(s);
    }
    let answer = conn.call(req)?;
    if output::json_mode(a.json) {
        print_json(&fields_only(&answer));
    } else {
        println!(
            "admitted {} user {}{}",
            answer["station"].as_str().unwrap_or(""),
            answer["userId"].as_str().unwrap_or(""),
            answer["name"]
                .as_str()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub fn deny(socket: &Path, a: DenyArgs) -> Result<(), CliError> {
    let mut req = json!({"op": "deny", "userId": a.user_id});
    if let Some(s) = &a.station {
        req["station"] = json!(s);
    }
    let answer = Connection::open(socket)?.call(req)?;
    print_json(&fields_only(&answer));
    Ok(())
}

fn print_list(answer: &Value, json: bool) {
    let stations = answer["access"].as_array().cloned().unwrap_or_default();
    if json {
        stations.iter().for_each(print_json);
        return;
    }
    if stations.is_empty() {
        println!("no chat station is running");
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
    println!(
        "{}",
        output::table(&["STATION", "USER", "NAME", "STATUS", "SINCE/UNTIL"], &rows)
    );
}
