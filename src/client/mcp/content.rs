//! What a session reads: one metro event turned into the params of a
//! `notifications/claude/channel` notification — `content` as a person would
//! read it, `meta` the event's identifiers (strings only, identifier-safe
//! keys, only keys that have a value).

use serde_json::{json, Map, Value};

/// The event fields copied into `meta`, under the same names (all of them
/// letters only, so Claude Code keeps them).
const META_KEYS: [&str; 11] = [
    "line",
    "id",
    "messageId",
    "from",
    "fromName",
    "kind",
    "station",
    "ts",
    "lineName",
    "replyTo",
    "to",
];

/// `{content, meta}` for one event.
pub fn channel_params(event: &Value) -> Value {
    let mut meta = Map::new();
    for key in META_KEYS {
        if let Some(v) = event.get(key).and_then(Value::as_str) {
            if !v.is_empty() {
                meta.insert(key.to_string(), Value::String(v.to_string()));
            }
        }
    }
    json!({"content": content(event), "meta": meta})
}

fn text(event: &Value) -> &str {
    event["text"].as_str().unwrap_or("")
}

fn message_id(event: &Value) -> &str {
    event["messageId"].as_str().unwrap_or("?")
}

/// The event as a person would read it.
pub fn content(event: &Value) -> String {
    let kind = event["kind"].as_str().unwrap_or("");
    let mut out = match kind {
        "react" => match event["emoji"].as_str().unwrap_or("") {
            "" => format!("removed a reaction from {}", message_id(event)),
            emoji => format!("reacted {emoji} to {}", message_id(event)),
        },
        "edit" => format!("edited {}: {}", message_id(event), text(event)),
        "callback" => {
            let label = event["label"]
                .as_str()
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| text(event));
            format!("pressed \"{label}\" on {}", message_id(event))
        }
        _ => text(event).to_string(),
    };
    if let Some(files) = event["attachments"].as_array() {
        for a in files {
            let line = attachment(a);
            if out.is_empty() {
                out = line;
            } else {
                out.push('\n');
                out.push_str(&line);
            }
        }
    }
    out
}

/// `[document report.pdf, 12.0 KB]`: kind, name and size where known.
fn attachment(a: &Value) -> String {
    let kind = a["type"].as_str().unwrap_or("file");
    let name = a["name"].as_str().or_else(|| {
        a["path"]
            .as_str()
            .map(|p| p.rsplit('/').next().unwrap_or(p))
    });
    let mut s = format!("[{kind}");
    if let Some(n) = name {
        s.push(' ');
        s.push_str(n);
    }
    if let Some(size) = a["size"].as_u64() {
        s.push_str(", ");
        s.push_str(&human_size(size));
    }
    s.push(']');
    s
}

fn human_size(bytes: u64) -> String {
    const KB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KB {
        format!("{bytes} B")
    } else if b < KB * KB {
        format!("{:.1} KB", b / KB)
    } else {
        format!("{:.1} MB", b / (KB * KB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_message_reads_as_its_text_with_string_meta() {
        let e = json!({"id":"msg_1","ts":"t","station":"telegram","kind":"inbound",
            "line":"metro://telegram/42","from":"metro://telegram/user/7","to":"metro://telegram/42",
            "fromName":"Ann","text":"deploy?","messageId":"10","updateId":5});
        let p = channel_params(&e);
        assert_eq!(p["content"], "deploy?");
        assert_eq!(p["meta"]["messageId"], "10");
        assert_eq!(p["meta"]["fromName"], "Ann");
        assert!(p["meta"].get("updateId").is_none());
        assert!(p["meta"].get("replyTo").is_none());
        assert!(p["meta"]
            .as_object()
            .unwrap()
            .values()
            .all(Value::is_string));
    }

    #[test]
    fn reactions_edits_presses_and_files_are_described() {
        let r = json!({"kind":"react","messageId":"9","emoji":"👍"});
        assert_eq!(content(&r), "reacted 👍 to 9");
        let r = json!({"kind":"react","messageId":"9","emoji":""});
        assert_eq!(content(&r), "removed a reaction from 9");
        let e = json!({"kind":"edit","messageId":"9","text":"new"});
        assert_eq!(content(&e), "edited 9: new");
        let c = json!({"kind":"callback","messageId":"9","text":"yes x"});
        assert_eq!(content(&c), "pressed \"yes x\" on 9");
        let f = json!({"kind":"inbound","text":"see","attachments":[
            {"type":"document","name":"a.pdf","size":2048},{"type":"image","path":"/tmp/p.png"}]});
        assert_eq!(content(&f), "see\n[document a.pdf, 2.0 KB]\n[image p.png]");
    }
}
