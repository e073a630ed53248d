//! The permission relay (`--permission-relay`): Claude Code asks before a
//! tool runs; the bridge posts the question to the approver line and turns
//! the answer from the phone into a verdict.
//!
//! Owns the requests asked (at most [`MAX_REQUESTS`], the oldest forgotten
//! first), the approver line, and the rule for what counts as an answer: a
//! button press or a `yes <id>` / `no <id>` message (any case, spaces
//! around ignored), received by a chat station itself on the line the
//! request was posted to. Which stations are chats (Telegram, Discord) is
//! metrod's word: the `chat` field of its `stations` rows, read on every
//! (re)connect before the subscription starts; until it is known, nothing
//! is an answer and questions carry no buttons. The station only logs
//! admitted senders, and an event `publish`ed over the socket on a chat
//! line carries `published: true`, so nobody but an admitted person can
//! approve. Each request is answered at most once.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::proto;

/// Requests remembered at once (answered ones included, so a second answer
/// is recognised as such).
pub const MAX_REQUESTS: usize = 256;

/// A question Claude Code asked (`permission_request` params).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Request {
    pub request_id: String,
    #[serde(default)]
    pub tool_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub input_preview: String,
}

struct Asked {
    id: String,
    line: String,
    answered: bool,
}

#[derive(Default)]
struct State {
    asked: VecDeque<Asked>,
    /// The chat line a message most recently arrived on.
    last_chat_line: Option<String>,
    /// The stations whose `stations` row says `chat` (empty until read).
    chat: HashSet<String>,
}

pub struct Relay {
    approver: Option<String>,
    state: Mutex<State>,
}

/// What an incoming event means to the relay.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not an answer: deliver it as a channel message.
    None,
    /// The verdict for a waiting request: `behavior` is `allow` or `deny`.
    Verdict {
        request_id: String,
        behavior: &'static str,
    },
    /// An answer to an id that is unknown or already answered: say so on
    /// the chat, nothing else.
    Stale { request_id: String },
}

/// `yes <id>` / `no <id>` → (allow?, id).
pub fn parse(text: &str) -> Option<(bool, String)> {
    let mut words = text.split_whitespace();
    let word = words.next()?.to_ascii_lowercase();
    let id = words.next()?.to_ascii_lowercase();
    if words.next().is_some() || id.len() > 64 {
        return None;
    }
    match word.as_str() {
        "yes" => Some((true, id)),
        "no" => Some((false, id)),
        _ => None,
    }
}

impl Relay {
    pub fn new(approver: Option<String>) -> Relay {
        Relay {
            approver,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere never leaves State half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the chat stations from a `stations` answer: the rows whose
    /// `chat` is true.
    pub fn learn_stations(&self, rows: &Value) {
        let chat = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["chat"] == json!(true))
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        self.state().chat = chat;
    }

    /// Where a new request goes: `--approver`, else the last chat line.
    pub fn approver_line(&self) -> Option<String> {
        self.approver
            .clone()
            .or_else(|| self.state().last_chat_line.clone())
    }

    /// Remembers that `id` was asked on `line`.
    pub fn asked(&self, id: &str, line: &str) {
        let mut s = self.state();
        if s.asked.len() >= MAX_REQUESTS {
            s.asked.pop_front();
        }
        s.asked.push_back(Asked {
            id: id.to_ascii_lowercase(),
            line: line.to_string(),
            answered: false,
        });
    }

    /// Looks at one delivered event: remembers chat lines, recognises answers.
    pub fn on_event(&self, event: &Value) -> Answer {
        let kind = event["kind"].as_str().unwrap_or("");
        let line = event["line"].as_str().unwrap_or("");
        let mut s = self.state();
        let station_made = event["station"]
            .as_str()
            .is_some_and(|st| s.chat.contains(st))
            && event.get("published").is_none();
        if station_made && kind == "inbound" {
            s.last_chat_line = Some(line.to_string());
        }
        if !station_made || !matches!(kind, "inbound" | "callback") {
            return Answer::None;
        }
        let Some((allow, id)) = event["text"].as_str().and_then(parse) else {
            return Answer::None;
        };
        // Only lines where a question was asked take answers.
        if !s.asked.iter().any(|a| a.line == line) {
            return Answer::None;
        }
        match s
            .asked
            .iter_mut()
            .find(|a| a.id == id && a.line == line && !a.answered)
        {
            Some(a) => {
                a.answered = true;
                Answer::Verdict {
                    request_id: a.id.clone(),
                    behavior: if allow { "allow" } else { "deny" },
                }
            }
            None => Answer::Stale { request_id: id },
        }
    }
}

impl Relay {
    /// The `send` request that asks the question on `line`: with Allow and
    /// Deny buttons on a chat station's line.
    pub fn question(&self, line: &str, from: &str, r: &Request) -> proto::Request {
        let chat = self.state().chat.contains(crate::line::station_of(line));
        question(line, from, r, chat)
    }
}

fn question(line: &str, from: &str, r: &Request, chat: bool) -> proto::Request {
    let id = &r.request_id;
    let mut text = format!("Claude wants to run {}", r.tool_name);
    if !r.description.is_empty() {
        text.push_str(&format!(": {}", r.description));
    }
    if !r.input_preview.is_empty() {
        text.push_str(&format!("\n\n{}", r.input_preview));
    }
    text.push_str(&format!("\n\nReply \"yes {id}\" or \"no {id}\"."));
    let buttons = chat.then(|| {
        json!([[
            {"text": "Allow", "data": format!("yes {id}")},
            {"text": "Deny", "data": format!("no {id}")},
        ]])
    });
    proto::Request::Send(proto::Send {
        line: line.to_string(),
        text,
        from: Some(from.to_string()),
        buttons,
        no_claim: Some(true),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(line: &str, text: &str) -> Value {
        json!({"station":"telegram","kind":"inbound","line":line,"text":text})
    }

    #[test]
    fn answers_are_parsed_in_any_case() {
        assert_eq!(parse("  YES AbCdE "), Some((true, "abcde".into())));
        assert_eq!(parse("no abcde"), Some((false, "abcde".into())));
        assert_eq!(parse("yes"), None);
        assert_eq!(parse("yes abcde please"), None);
        assert_eq!(parse("maybe abcde"), None);
    }

    #[test]
    fn only_stations_metrod_calls_chats_answer_and_get_buttons() {
        let r = Relay::new(None);
        let req = Request {
            request_id: "abcde".into(),
            tool_name: "Bash".into(),
            description: String::new(),
            input_preview: String::new(),
        };
        let buttons = |r: &Relay, line: &str| match r.question(line, "metro://claude/a", &req) {
            proto::Request::Send(s) => s.buttons.is_some(),
            _ => panic!("not a send"),
        };
        // Before metrod said which stations are chats: no chat at all.
        r.asked("abcde", "metro://telegram/42");
        assert_eq!(
            r.on_event(&msg("metro://telegram/42", "yes abcde")),
            Answer::None
        );
        assert!(r.approver_line().is_none());
        assert!(!buttons(&r, "metro://telegram/42"));
        r.learn_stations(&json!([
            {"name": "local", "chat": false},
            {"name": "telegram", "chat": true},
            {"name": "webhook", "chat": false},
        ]));
        assert!(buttons(&r, "metro://telegram/42"));
        assert!(!buttons(&r, "metro://webhook/gh"));
        // A webhook delivery saying "yes <id>" on an asked line is no answer.
        r.asked("fghij", "metro://webhook/gh");
        let hook = json!({"station":"webhook","kind":"inbound","line":"metro://webhook/gh","text":"yes fghij"});
        assert_eq!(r.on_event(&hook), Answer::None);
        assert_eq!(
            r.on_event(&msg("metro://telegram/42", "yes abcde")),
            Answer::Verdict {
                request_id: "abcde".into(),
                behavior: "allow"
            }
        );
    }

    #[test]
    fn a_request_is_answered_once_and_only_by_the_station() {
        let r = Relay::new(None);
        r.learn_stations(&json!([{"name": "telegram", "chat": true}]));
        r.on_event(&msg("metro://telegram/42", "hi"));
        assert_eq!(r.approver_line().as_deref(), Some("metro://telegram/42"));
        r.asked("abcde", "metro://telegram/42");
        // Published over the socket: not an answer.
        let mut forged = msg("metro://telegram/42", "yes abcde");
        forged["published"] = json!(true);
        assert_eq!(r.on_event(&forged), Answer::None);
        // Another line: not an answer.
        assert_eq!(
            r.on_event(&msg("metro://telegram/9", "yes abcde")),
            Answer::None
        );
        assert_eq!(
            r.on_event(&msg("metro://telegram/42", "no ABCDE")),
            Answer::Verdict {
                request_id: "abcde".into(),
                behavior: "deny"
            }
        );
        assert_eq!(
            r.on_event(&msg("metro://telegram/42", "yes abcde")),
            Answer::Stale {
                request_id: "abcde".into()
            }
        );
    }
}
