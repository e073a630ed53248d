//! The bridge's tools: each a thin call over protocol v1 with a JSON Schema
//! for its arguments. A tool call opens its own short connection to metrod
//! (a Unix socket: cheap), so a slow call never holds up the push stream.
//! A daemon error becomes a tool result with `isError: true` carrying the
//! daemon's code and message; metrod not running is `unavailable`.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::super::conn::Connection;
use super::super::CliError;
use crate::proto::{self, Request};

/// One tool: name, the description the model reads, argument schema.
struct Spec {
    name: &'static str,
    description: &'static str,
    properties: Value,
    required: &'static [&'static str],
}

fn specs() -> Vec<Spec> {
    let line = json!({"type": "string", "description": "Line URI, e.g. metro://telegram/42 (the `line` in an event's meta)"});
    let message_id = json!({"type": "string", "description": "The message's id (`messageId` in an event's meta, or a metro id msg_…)"});
    vec![
        Spec {
            name: "reply",
            description: "Send a message on a chat line (Telegram, Discord, local); pass messageId to reply to a message. Claims an unclaimed conversation.",
            properties: json!({
                "line": line,
                "text": {"type": "string", "description": "The message text"},
                "messageId": {"type": "string", "description": "The message replied to (`messageId` in meta)"},
                "files": {"type": "array", "items": {"type": "string"}, "description": "Paths of files to attach (images are sent as photos)"},
                "buttons": {"description": "Inline buttons: [\"Yes\",\"No\"], or rows [[{\"text\":\"Open\",\"url\":\"https://…\"}],[{\"text\":\"Done\",\"data\":\"done\"}]]"},
            }),
            required: &["line", "text"],
        },
        Spec {
            name: "send",
            description: "Notify another agent's line (e.g. metro://codex/user/bob) with a text.",
            properties: json!({"line": line, "text": {"type": "string"}}),
            required: &["line", "text"],
        },
        Spec {
            name: "edit",
            description: "Edit a message metro sent earlier.",
            properties: json!({"line": line, "messageId": message_id, "text": {"type": "string", "description": "The new text"}}),
            required: &["line", "messageId", "text"],
        },
        Spec {
            name: "react",
            description: "React to a message with an emoji (\"\" clears your reaction).",
            properties: json!({"line": line, "messageId": message_id, "emoji": {"type": "string"}}),
            required: &["line", "messageId", "emoji"],
        },
        Spec {
            name: "download",
            description: "Save a message's attachments (Telegram, Discord) and return their paths.",
            properties: json!({"line": line, "messageId": message_id, "outDir": {"type": "string", "description": "Directory to save into (default: a metro-downloads directory under the system temp dir)"}}),
            required: &["line", "messageId"],
        },
        Spec {
            name: "history",
            description: "Search metro's log, newest first: by line and/or a case-insensitive text.",
            properties: json!({
                "line": line,
                "text": {"type": "string", "description": "Substring of the message text"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "Most entries (default 20)"},
            }),
            required: &[],
        },
        Spec {
            name: "claim",
            description: "Own a conversation: its events then come to this session only. ifFree fails if another session owns it.",
            properties: json!({"line": line, "ifFree": {"type": "boolean"}}),
            required: &["line"],
        },
        Spec {
            name: "release",
            description: "Give a conversation back (unclaimed: every session may take it).",
            properties: json!({"line": line}),
            required: &["line"],
        },
        Spec {
            name: "claims",
            description: "Who owns which conversation.",
            properties: json!({}),
            required: &[],
        },
        Spec {
            name: "stations",
            description: "Status of metro's stations (Telegram, Discord, webhooks), in words.",
            properties: json!({}),
            required: &[],
        },
    ]
}

/// Every tool, for `tools/list`.
pub fn list() -> Vec<rmcp::model::Tool> {
    specs()
        .into_iter()
        .map(|s| {
            let schema = json!({
                "type": "object",
                "properties": s.properties,
                "required": s.required,
                "additionalProperties": false,
            });
            let schema: Map<String, Value> = match schema {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            rmcp::model::Tool::new(s.name, s.description, schema)
        })
        .collect()
}

/// What a tool call came to: text for the model, and whether it failed.
pub struct Outcome {
    pub text: String,
    pub is_error: bool,
}

impl Outcome {
    fn ok(text: String) -> Outcome {
        Outcome {
            text,
            is_error: false,
        }
    }
    fn error(text: String) -> Outcome {
        Outcome {
            text,
            is_error: true,
        }
    }
}

/// A tool argument problem, answered as `bad_request` like the daemon would.
fn bad(message: String) -> Outcome {
    Outcome::error(format!("bad_request: {message}"))
}

fn string(args: &Map<String, Value>, key: &str) -> Result<Option<String>, Outcome> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("{key} must be a string"))),
    }
}

fn required(args: &Map<String, Value>, key: &str) -> Result<String, Outcome> {
    string(args, key)?.ok_or_else(|| bad(format!("{key} is required")))
}

fn absolute(p: &str) -> Result<String, Outcome> {
    std::path::absolute(p)
        .map(|a| a.display().to_string())
        .map_err(|e| bad(format!("{p}: {e}")))
}

const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "gif", "webp"];

/// The protocol request for a tool call, or the reason there is none.
fn request(name: &str, args: &Map<String, Value>, me: &str) -> Result<Request, Outcome> {
    let from = Some(me.to_string());
    Ok(match name {
        "reply" => {
            let mut req = proto::Send {
                line: required(args, "line")?,
                text: required(args, "text")?,
                from,
                reply_to: string(args, "messageId")?,
                buttons: args.get("buttons").filter(|b| !b.is_null()).cloned(),
                ..Default::default()
            };
            if let Some(files) = args.get("files").filter(|f| !f.is_null()) {
                let Some(files) = files.as_array() else {
                    return Err(bad("files must be an array of paths".into()));
                };
                let (mut images, mut documents) = (Vec::new(), Vec::new());
                for f in files {
                    let Some(f) = f.as_str() else {
                        return Err(bad("files must be an array of paths".into()));
                    };
                    let ext = Path::new(f)
                        .extension()
                        .and_then(|e| e.to_str())
                        .map(str::to_ascii_lowercase)
                        .unwrap_or_default();
                    if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                        images.push(absolute(f)?);
                    } else {
                        documents.push(absolute(f)?);
                    }
                }
                req.images = (!images.is_empty()).then_some(images);
                req.documents = (!documents.is_empty()).then_some(documents);
            }
            Request::Send(req)
        }
        "send" => Request::Send(proto::Send {
            line: required(args, "line")?,
            text: required(args, "text")?,
            from,
            ..Default::default()
        }),
        "edit" => Request::Edit(proto::Edit {
            line: required(args, "line")?,
            message_id: required(args, "messageId")?,
            text: required(args, "text")?,
            from,
            ..Default::default()
        }),
        "react" => Request::React(proto::React {
            line: required(args, "line")?,
            message_id: required(args, "messageId")?,
            emoji: required(args, "emoji")?,
            from,
            ..Default::default()
        }),
        "download" => {
            let out = match string(args, "outDir")? {
                Some(d) => PathBuf::from(absolute(&d)?),
                None => std::env::temp_dir().join("metro-downloads"),
            };
            Request::Download(proto::Download {
                line: required(args, "line")?,
                message_id: required(args, "messageId")?,
                out_dir: out.display().to_string(),
            })
        }
        "history" => {
            let limit = match args.get("limit") {
                None | Some(Value::Null) => 20,
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| bad("limit must be a whole number".into()))?,
            };
            Request::History(proto::History {
                limit: Some(limit),
                line: string(args, "line")?,
                text: string(args, "text")?,
                ..Default::default()
            })
        }
        "claim" => {
            let if_free = match args.get("ifFree") {
                None | Some(Value::Null) => false,
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| bad("ifFree must be true or false".into()))?,
            };
            Request::Claim(proto::Claim {
                line: required(args, "line")?,
                as_: me.to_string(),
                if_free: Some(if_free),
                ephemeral: None,
            })
        }
        "release" => Request::Release(proto::Release {
            line: required(args, "line")?,
        }),
        "claims" => Request::Claims,
        "stations" => Request::Stations,
        other => return Err(bad(format!("unknown tool {other:?}"))),
    })
}

/// The answer in a form the model reads.
fn render(name: &str, mut answer: Value) -> String {
    if let Some(m) = answer.as_object_mut() {
        m.remove("req");
        m.remove("ok");
    }
    match name {
        "download" => {
            let files: Vec<&str> = answer["files"]
                .as_array()
                .map(|f| f.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if files.is_empty() {
                "no files".into()
            } else {
                files.join("\n")
            }
        }
        "history" => {
            let entries = answer["entries"].as_array().cloned().unwrap_or_default();
            if entries.is_empty() {
                return "no entries".into();
            }
            entries
                .iter()
                .map(|e| serde_json::to_string(e).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        }
        "stations" => answer["stations"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        format!(
                            "{}: {}",
                            r["name"].as_str().unwrap_or("?"),
                            r["status"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default(),
        _ => serde_json::to_string(&answer).unwrap_or_default(),
    }
}

/// The text of a failed call: the daemon's code and message.
pub fn error_text(e: &CliError) -> String {
    match e {
        CliError::Daemon { code, message } => format!("{code}: {message}"),
        CliError::NotRunning { socket, cause } => format!(
            "unavailable: metrod is not running ({}: {cause}); the bridge reconnects by itself, try again once it is back",
            socket.display()
        ),
        other => format!("unavailable: metrod did not answer: {other}"),
    }
}

/// One request over a fresh connection, blocking (run it off the runtime).
pub fn call_blocking(socket: &Path, request: Request) -> Result<Value, CliError> {
    Connection::open(socket)?.call(&request)
}

/// Runs tool `name` as identity `me`.
pub async fn call(socket: PathBuf, me: String, name: String, args: Map<String, Value>) -> Outcome {
    let request = match request(&name, &args, &me) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let answer = tokio::task::spawn_blocking(move || call_blocking(&socket, request)).await;
    match answer {
        Ok(Ok(a)) => Outcome::ok(render(&name, a)),
        Ok(Err(e)) => Outcome::error(error_text(&e)),
        Err(e) => Outcome::error(format!("internal: the call did not finish: {e}")),
    }
}
