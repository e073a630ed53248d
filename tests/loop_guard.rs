//! The loop guard against a real daemon: two scripted agents that answer
//! each other over the socket are stopped at `--max-hops`, with one
//! `system` notice; a person's message starts a new count; client-sent
//! `hops` are ignored; a reply by platform message id (fake Telegram)
//! counts through the station's id map.

mod common;
mod fake_telegram;

use common::*;
use fake_telegram::*;
use serde_json::{json, Value};

const A: &str = "metro://claude/user/a";
const B: &str = "metro://codex/user/b";

/// An agent: a connection subscribed to what is addressed to it.
struct Agent {
    me: &'static str,
    c: Client,
}

impl Agent {
    fn new(d: &Daemon, me: &'static str) -> Agent {
        let mut c = d.connect();
        c.subscribe(json!({"as": me, "mode": "mine-only", "follow": true, "since": "tail"}));
        Agent { me, c }
    }

    /// The next event addressed to this agent (loop notices on its line
    /// are passed over).
    fn next(&mut self) -> Value {
        loop {
            let f = self.c.frame();
            assert_eq!(f["event"]["to"], self.me, "{f}");
            if f["event"]["kind"] != "system" {
                return f["event"].clone();
            }
        }
    }

    /// Answers `ev` on the line of `to`, as an auto-replying agent does.
    fn answer(&mut self, ev: &Value, to: &str) -> Value {
        self.c.request(json!({
            "op": "send", "line": to, "from": self.me, "noClaim": true,
            "text": format!("re: {}", ev["text"].as_str().unwrap_or("")),
            "replyTo": ev["id"],
        }))
    }
}

fn hops(ev: &Value) -> u64 {
    ev.get("hops").and_then(Value::as_u64).unwrap_or(0)
}

fn system_events(d: &Daemon) -> Vec<Value> {
    d.history()
        .into_iter()
        .filter(|e| e["kind"] == "system")
        .collect()
}

#[test]
fn two_agents_answering_each_other_stop_at_the_limit_and_a_person_restarts_the_count() {
    let d = Daemon::start_with(&["--max-hops", "4"]);
    let mut a = Agent::new(&d, A);
    let mut b = Agent::new(&d, B);
    let mut person = d.connect();

    // A person writes to A; then A and B answer whatever arrives.
    publish(
        &mut person,
        json!({"line": "telegram/-100/5", "text": "ping", "to": A, "fromName": "Ann"}),
    );
    let mut turn = 0;
    let refused = loop {
        let (me, other) = if turn % 2 == 0 {
            (&mut a, B)
        } else {
            (&mut b, A)
        };
        let ev = me.next();
        let answer = me.answer(&ev, other);
        if answer["ok"] == json!(false) {
            break (me.me, ev, answer);
        }
        turn += 1;
        assert!(turn < 50, "the exchange never stopped");
    };
    let (who, answered, answer) = refused;
    assert_eq!(answer["error"]["code"], "loop", "{answer}");
    assert_eq!(answer["error"]["hops"], 5);
    assert_eq!(answer["error"]["maxHops"], 4);
    assert_eq!(hops(&answered), 4, "the last answer that went through");

    // The log: answers with hops 1..=4, nothing past the limit, and one
    // notice saying who was stopped.
    let notes: Vec<Value> = d
        .history()
        .into_iter()
        .filter(|e| e["kind"] == "notify")
        .collect();
    let counted: Vec<u64> = notes.iter().map(hops).collect();
    assert_eq!(counted, vec![1, 2, 3, 4]);
    let sys = system_events(&d);
    assert_eq!(sys.len(), 1, "{sys:?}");
    assert_eq!(sys[0]["stopped"], who);
    assert_eq!(sys[0]["from"], "metro://local/metrod");
    assert_eq!(sys[0]["line"], if who == A { B } else { A });
    assert!(sys[0]["text"].as_str().unwrap().contains(who), "{}", sys[0]);
    assert_eq!(hops(&sys[0]), 5);

    // Trying again, or answering the notice, is refused without a second
    // notice.
    let (me, other) = if who == A { (&mut a, B) } else { (&mut b, A) };
    let again = me.answer(&answered, other);
    assert_eq!(again["error"]["code"], "loop");
    let notice = sys[0].clone();
    let on_notice = me.answer(&notice, other);
    assert_eq!(on_notice["error"]["code"], "loop");
    assert_eq!(system_events(&d).len(), 1);

    // A person's message starts a new count.
    let p = publish(
        &mut person,
        json!({"line": "telegram/-100/5", "text": "again", "to": A}),
    );
    let ev = a.next();
    assert_eq!(ev["id"], p["id"]);
    assert_eq!(hops(&ev), 0, "people's messages have no hops");
    let ok = a.answer(&ev, B);
    assert_eq!(ok["ok"], json!(true), "{ok}");
    let ev = b.next();
    assert_eq!(ev["id"], ok["id"]);
    assert_eq!(hops(&ev), 1);
    check_schema(&a.c, &d);
    check_schema(&b.c, &d);
}

#[test]
fn hops_are_minted_by_metrod_and_survive_a_restart() {
    let mut d = Daemon::start_with(&["--max-hops", "2"]);
    let mut c = d.connect();
    // A client's `hops` is ignored: no replyTo, no hops.
    let first = publish(
        &mut c,
        json!({"line": "claude/user/a", "from": A, "kind": "notify", "text": "x", "hops": 99}),
    );
    let second = c.ok(json!({"op": "publish", "event": {
        "line": "claude/user/a", "from": B, "kind": "notify", "text": "y",
        "replyTo": first["id"], "hops": 0,
    }}));
    let third = c.ok(json!({
        "op": "send", "line": "codex/user/b", "from": A, "text": "z",
        "replyTo": second["id"], "noClaim": true,
    }));
    let log = d.history();
    let by_id = |id: &Value| log.iter().find(|e| e["id"] == *id).cloned().unwrap();
    assert_eq!(hops(&by_id(&first["id"])), 0);
    assert!(
        by_id(&first["id"]).get("hops").is_none(),
        "0 is not written"
    );
    assert_eq!(hops(&by_id(&second["id"])), 1);
    assert_eq!(hops(&by_id(&third["id"])), 2);
    // An edit revises a message: the same hops, never refused.
    c.ok(json!({"op": "edit", "line": "codex/user/b", "from": A, "messageId": third["id"], "text": "z!", "noClaim": true}));
    // The index is seeded from the log: after a restart, answering the
    // hop-2 event is still hop 3, over the limit.
    d.stop();
    d.restart();
    let mut c = d.connect();
    let e = c.err(
        json!({"op": "react", "line": "codex/user/b", "from": B, "messageId": third["id"], "emoji": "👍"}),
        "loop",
    );
    assert_eq!(e["hops"], 3);
    // Unknown or absent: an answer to something not counted is hop 1.
    let ok = c.ok(json!({"op": "send", "line": "codex/user/b", "from": B, "text": "w", "replyTo": "msg_00000000000000000", "noClaim": true}));
    assert_eq!(
        hops(
            &d.history()
                .into_iter()
                .find(|e| e["id"] == ok["id"])
                .unwrap()
        ),
        1
    );
    check_schema(&c, &d);
}

#[test]
fn a_reply_by_telegram_message_id_counts_and_a_telegram_message_resets() {
    let fake = Fake::start();
    let env = fake.env("42");
    let d = Daemon::start_env(&["--max-hops", "2"], &env);
    fake.watch_log(d.history_path());
    let mut c = d.connect();
    let sub = c.subscribe(
        json!({"as": A, "mode": "all", "follow": true, "since": "tail", "station": "telegram"}),
    );

    // A person on Telegram; A answers (hop 1); B answers A's message by its
    // Telegram message id (hop 2); A again: refused.
    fake.push(text_update(1, 42, 42, "Ann", "hello"));
    let inbound = c.frame();
    assert_eq!(inbound["sub"], sub);
    let ev = &inbound["event"];
    assert_eq!(hops(ev), 0);
    let a1 = c.ok(json!({"op": "send", "line": "telegram/42", "from": A, "text": "hi Ann", "replyTo": ev["messageId"], "noClaim": true}));
    let b1 = c.ok(json!({"op": "send", "line": "telegram/42", "from": B, "text": "me too", "replyTo": a1["messageId"], "noClaim": true}));
    let err = c.err(
        json!({"op": "send", "line": "telegram/42", "from": A, "text": "and me", "replyTo": b1["messageId"], "noClaim": true}),
        "loop",
    );
    assert_eq!(err["hops"], 3);
    let sends = fake.calls("sendMessage");
    assert_eq!(sends.len(), 2, "the refused answer never reached Telegram");
    let log = d.history();
    let by_id = |id: &Value| log.iter().find(|e| e["id"] == *id).cloned().unwrap();
    assert_eq!(hops(&by_id(&a1["id"])), 1);
    assert_eq!(hops(&by_id(&b1["id"])), 2);
    // Ann writes again: answering her is hop 1.
    fake.push(text_update(2, 42, 42, "Ann", "still there?"));
    let ev = loop {
        let f = c.frame();
        if f["event"]["kind"] == "inbound" {
            break f["event"].clone();
        }
    };
    c.ok(json!({"op": "send", "line": "telegram/42", "from": A, "text": "yes", "replyTo": ev["id"], "noClaim": true}));
    fake.wait_calls("sendMessage", 3);
}

/// Publishes read together (one write of a pipelining agent) are checked
/// one by one: an answer past the limit among them is refused with `loop`
/// and its notice, the others are stored with their hops, in the order
/// sent.
#[test]
fn an_answer_past_the_limit_among_pipelined_publishes_is_refused_alone() {
    let d = Daemon::start_with(&["--max-hops", "1"]);
    let mut a = d.connect();
    let mut b = d.connect();
    let line = "telegram/-100/9";
    let e0 = publish(
        &mut a,
        json!({"line": line, "from": A, "kind": "reply", "text": "e0"}),
    );
    let e1 = publish(
        &mut b,
        json!({"line": line, "from": B, "kind": "reply", "text": "e1", "replyTo": e0["id"]}),
    );
    let event = |text: &str, reply_to: Option<&Value>| {
        let mut ev = json!({"line": line, "from": A, "kind": "reply", "text": text});
        if let Some(id) = reply_to {
            ev["replyTo"] = id.clone();
        }
        ev
    };
    let requests = [
        (101, event("p1", None)),
        (102, event("too far", Some(&e1["id"]))),
        (103, event("p2", None)),
        (104, event("re e0", Some(&e0["id"]))),
    ];
    let mut bytes = Vec::new();
    for (req, ev) in &requests {
        bytes.extend_from_slice(
            json!({"op": "publish", "req": req, "event": ev})
                .to_string()
                .as_bytes(),
        );
        bytes.push(b'\n');
    }
    a.send_raw(&bytes);
    let mut answers = std::collections::HashMap::new();
    for _ in 0..requests.len() {
        let line = a.read_line().expect("an answer");
        let v: Value = serde_json::from_str(&line).unwrap();
        answers.insert(v["req"].as_u64().unwrap(), v);
    }
    assert_eq!(answers[&102]["ok"], json!(false), "{}", answers[&102]);
    assert_eq!(
        answers[&102]["error"]["code"],
        json!("loop"),
        "{}",
        answers[&102]
    );
    for req in [101, 103, 104] {
        assert_eq!(answers[&req]["ok"], json!(true), "{}", answers[&req]);
    }
    let log = d.history();
    let mine: Vec<(String, u64)> = log
        .iter()
        .filter(|e| e["from"] == A && e["kind"] == "reply")
        .map(|e| (e["text"].as_str().unwrap().to_string(), hops(e)))
        .collect();
    assert_eq!(
        mine,
        vec![
            ("e0".to_string(), 0),
            ("p1".to_string(), 0),
            ("p2".to_string(), 0),
            ("re e0".to_string(), 1)
        ]
    );
    let notices = system_events(&d);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["stopped"], json!(A));
}
