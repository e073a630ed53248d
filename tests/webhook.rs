//! The webhook station against a real daemon: real HTTP requests to its
//! listener (GitHub's published signature example, bearer tokens, every
//! bad input), duplicate deliveries, restarts, the delivery predicate, and
//! `metroctl webhook` / `metroctl tunnel`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use common::*;
use metro::stations::webhook::verify;
use reqwest::blocking::{Body, Client as Http};
use serde_json::{json, Value};

// GitHub's published example ("Validating webhook deliveries").
const SECRET: &str = "It's a Secret to Everybody";
const BODY: &str = "Hello, World!";
const SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

const A: &str = "metro://claude/user/a";

fn http() -> Http {
    Http::builder()
        .timeout(PATIENCE)
        .build()
        .expect("http client")
}

struct Hook {
    id: String,
    url: String,
    line: String,
}

fn add(d: &Daemon, c: &mut Client, label: &str, secret: Option<&str>) -> Hook {
    let mut req = json!({"op": "webhookAdd", "label": label});
    if let Some(s) = secret {
        req["secret"] = json!(s);
    }
    let a = c.ok(req);
    let id = a["id"].as_str().unwrap().to_string();
    assert_eq!(a["path"], json!(format!("/hooks/{id}")));
    assert_eq!(a["label"], json!(label));
    let url = format!("{}/hooks/{id}", d.webhook_url());
    assert_eq!(a["url"], json!(url));
    Hook {
        line: format!("metro://webhook/{id}"),
        id,
        url,
    }
}

/// POSTs `body` with `headers`; returns the status and the JSON answer.
fn post(url: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> (u16, Value) {
    let mut r = http().post(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.body(body).send().expect("POST");
    answer(resp)
}

fn answer(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(ct, "application/json", "status {status}");
    let v: Value = resp.json().expect("a JSON answer");
    if status >= 400 {
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "error body: {v}"
        );
    }
    (status, v)
}

fn webhook_events(d: &Daemon) -> Vec<Value> {
    d.history()
        .into_iter()
        .filter(|e| e["station"] == "webhook")
        .collect()
}

#[test]
fn github_signed_delivery_with_the_published_example() {
    let d = Daemon::start();
    let mut c = d.connect();
    let hook = add(&d, &mut c, "github", Some(SECRET));

    let (status, a) = post(
        &hook.url,
        &[
            ("content-type", "text/plain"),
            ("user-agent", "GitHub-Hookshot/044aadd"),
            ("x-github-event", "ping"),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("x-hub-signature-256", SIG),
            ("x-hub-signature", "sha1=0000"),
        ],
        BODY,
    );
    assert_eq!(status, 202, "{a}");
    // Durable before the answer: the log already holds it.
    let log = webhook_events(&d);
    assert_eq!(log.len(), 1);
    let ev = &log[0];
    assert_eq!(a["id"], ev["id"]);
    assert_eq!(ev["station"], "webhook");
    assert_eq!(ev["kind"], "inbound");
    assert_eq!(ev["line"], json!(hook.line));
    assert_eq!(ev["from"], json!(hook.line));
    assert_eq!(ev["to"], json!(hook.line));
    assert_eq!(ev["payload"], json!(BODY));
    assert_eq!(ev["text"], "ping");
    assert_eq!(ev["lineName"], "github");
    assert_eq!(ev["messageId"], "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(
        ev["headers"],
        json!({
            "content-type": "text/plain",
            "user-agent": "GitHub-Hookshot/044aadd",
            "x-github-event": "ping",
            "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        }),
        "event-type and delivery headers only, never a signature"
    );

    // Wrong, malformed and missing signatures: 401, nothing stored.
    let wrong = verify::sign("not the secret", BODY.as_bytes());
    for headers in [
        vec![("x-hub-signature-256", wrong.as_str())],
        vec![("x-hub-signature-256", "sha256=757107ea")],
        vec![(
            "x-hub-signature-256",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )],
        vec![(
            "x-hub-signature",
            "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59",
        )],
        vec![],
    ] {
        let (status, a) = post(&hook.url, &headers, BODY);
        assert_eq!(status, 401, "{headers:?} -> {a}");
    }
    // The right signature for another body does not pass either.
    let (status, _) = post(&hook.url, &[("x-hub-signature-256", SIG)], "Hello, World?");
    assert_eq!(status, 401);
    assert_eq!(webhook_events(&d).len(), 1);

    // A signed JSON delivery as GitHub sends it.
    let body = json!({
        "action": "opened",
        "number": 12,
        "pull_request": {"title": "Fix the flaky test"},
        "repository": {"full_name": "octo/hello"},
        "sender": {"login": "ann"},
    })
    .to_string();
    let sig = verify::sign(SECRET, body.as_bytes());
    let (status, a) = post(
        &hook.url,
        &[
            ("content-type", "application/json"),
            ("x-github-event", "pull_request"),
            ("x-github-delivery", "d-2"),
            ("x-hub-signature-256", &sig),
        ],
        body.clone(),
    );
    assert_eq!(status, 202, "{a}");
    let log = webhook_events(&d);
    assert_eq!(log.len(), 2);
    assert_eq!(log[1]["text"], "pull_request.opened octo/hello by ann");
    assert_eq!(
        log[1]["payload"],
        serde_json::from_str::<Value>(&body).unwrap()
    );
    assert_eq!(log[1]["messageId"], "d-2");
}

#[test]
fn unsigned_endpoint_takes_json_text_and_form_bodies() {
    let d = Daemon::start();
    let mut c = d.connect();
    let hook = add(&d, &mut c, "ci", None);
    // (headers, body, stored payload, event type in the summary)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, Value, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("content-type", "application/json; charset=utf-8")],
            r#"{"build": 7, "ok": true}"#,
            json!({"build": 7, "ok": true}),
            "webhook",
        ),
        (
            vec![
                ("content-type", "text/plain"),
                ("x-event-type", "deploy.done"),
            ],
            "deployed v1.2",
            json!("deployed v1.2"),
            "deploy.done",
        ),
        (
            vec![
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-request-id", "r-9"),
                ("authorization", "Bearer leaked?"),
            ],
            "payload=%7B%7D&x=1",
            json!("payload=%7B%7D&x=1"),
            "webhook",
        ),
    ];
    for (i, (headers, body, payload, kind)) in cases.iter().enumerate() {
        let (status, a) = post(&hook.url, headers, body.to_string());
        assert_eq!(status, 202, "{a}");
        let ev = &webhook_events(&d)[i];
        assert_eq!(&ev["payload"], payload);
        assert_eq!(ev["text"], json!(format!("{kind} POST /hooks/{}", hook.id)));
        assert!(ev.get("messageId").is_none(), "no delivery id: {ev}");
        let h = ev["headers"].as_object().unwrap();
        assert!(!h.contains_key("authorization"), "{ev}");
    }
    assert_eq!(webhook_events(&d)[2]["headers"]["x-request-id"], "r-9");
}

#[test]
fn bearer_token_for_senders_that_cannot_sign() {
    let d = Daemon::start();
    let mut c = d.connect();
    let hook = add(&d, &mut c, "intercom", Some("tok-123"));
    let json_ct = ("content-type", "application/json");
    let (status, a) = post(
        &hook.url,
        &[json_ct, ("authorization", "Bearer tok-123")],
        r#"{"topic":"conversation.user.created"}"#,
    );
    assert_eq!(status, 202, "{a}");
    for auth in [
        "Bearer tok-12",
        "Bearer tok-1234",
        "Basic tok-123",
        "tok-123",
        "Bearer ",
    ] {
        let (status, a) = post(&hook.url, &[json_ct, ("authorization", auth)], "{}");
        assert_eq!(status, 401, "{auth:?} -> {a}");
    }
    let (status, _) = post(&hook.url, &[json_ct], "{}");
    assert_eq!(status, 401);
    let log = webhook_events(&d);
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0]["headers"],
        json!({"content-type": "application/json"})
    );
}

#[test]
fn bad_input_gets_a_json_error_and_stores_nothing() {
    let d = Daemon::start();
    let mut c = d.connect();
    let hook = add(&d, &mut c, "bad", None);
    let base = d.webhook_url();
    let json_ct = ("content-type", "application/json");

    // 404: unknown endpoint, other paths.
    for path in [
        "/hooks/nosuchendpoint",
        "/",
        "/hooks/",
        "/other",
        &format!("/hooks/{}/x", hook.id),
    ] {
        let (status, a) = post(&format!("{base}{path}"), &[], "{}");
        assert_eq!(status, 404, "{path} -> {a}");
    }
    // 405 with Allow: POST.
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let resp = http().request(method.clone(), &hook.url).send().unwrap();
        assert_eq!(
            resp.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some("POST")
        );
        let (status, _) = answer(resp);
        assert_eq!(status, 405, "{method}");
    }
    // 400: malformed JSON under a JSON content type (also an empty body).
    for body in ["{\"a\":", "not json", ""] {
        let (status, a) = post(&hook.url, &[json_ct], body);
        assert_eq!(status, 400, "{body:?} -> {a}");
    }
    // 415: neither JSON nor UTF-8.
    let (status, _) = post(
        &hook.url,
        &[("content-type", "application/octet-stream")],
        vec![0xffu8, 0xfe, 0x00],
    );
    assert_eq!(status, 415);
    // 413: over the default 1 MiB, with a length and chunked.
    let big = format!("\"{}\"", "x".repeat(1 << 20));
    let (status, _) = post(&hook.url, &[json_ct], big.clone());
    assert_eq!(status, 413);
    let (status, _) = post(
        &hook.url,
        &[json_ct],
        Body::new(std::io::Cursor::new(big.into_bytes())),
    );
    assert_eq!(status, 413);
    assert!(webhook_events(&d).is_empty(), "{:?}", webhook_events(&d));

    // Exactly the limit is fine.
    let max = format!("\"{}\"", "y".repeat((1 << 20) - 2));
    let (status, a) = post(&hook.url, &[json_ct], max);
    assert_eq!(status, 202, "{a}");
    assert_eq!(webhook_events(&d).len(), 1);
    // The socket protocol did not notice any of it.
    c.ok(json!({"op": "hello"}));
}

#[test]
fn body_limit_is_configurable() {
    let d = Daemon::start_with(&["--webhook-max-body", "2048"]);
    let mut c = d.connect();
    let hook = add(&d, &mut c, "small", None);
    let (status, _) = post(&hook.url, &[], "z".repeat(2049));
    assert_eq!(status, 413);
    let (status, _) = post(
        &hook.url,
        &[],
        Body::new(std::io::Cursor::new(vec![b'z'; 4000])),
    );
    assert_eq!(status, 413);
    let (status, _) = post(&hook.url, &[], "z".repeat(2048));
    assert_eq!(status, 202);
    assert_eq!(webhook_events(&d).len(), 1);
}

#[test]
fn a_retried_delivery_is_stored_once_also_after_a_restart() {
    let mut d = Daemon::start();
    let mut c = d.connect();
    let hook = add(&d, &mut c, "gh", None);
    let other = add(&d, &mut c, "gh2", None);
    let deliver = |url: &str, delivery: &str| {
        post(
            url,
            &[
                ("content-type", "application/json"),
                ("x-github-event", "push"),
                ("x-github-delivery", delivery),
            ],
            r#"{"ref":"refs/heads/main"}"#,
        )
    };
    let (status, first) = deliver(&hook.url, "D1");
    assert_eq!(status, 202);
    assert!(first.get("duplicate").is_none());
    let (status, again) = deliver(&hook.url, "D1");
    assert_eq!(status, 202);
    assert_eq!(again, json!({"id": first["id"], "duplicate": true}));
    // Per endpoint: another endpoint may use the same id.
    let (status, a) = deliver(&other.url, "D1");
    assert_eq!(status, 202);
    assert!(a.get("duplicate").is_none());
    assert_eq!(webhook_events(&d).len(), 2);

    // Eight retries at once: one event.
    let url = hook.url.clone();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                post(
                    &url,
                    &[("x-github-delivery", "D2"), ("content-type", "text/plain")],
                    "same",
                )
            })
        })
        .collect();
    let answers: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(_, a)| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    let d2: Vec<Value> = webhook_events(&d)
        .into_iter()
        .filter(|e| e["messageId"] == "D2")
        .collect();
    assert_eq!(d2.len(), 1);

    // After a restart the ids are read back from the end of the log.
    drop(c);
    d.stop();
    d.restart();
    let url = format!("{}/hooks/{}", d.webhook_url(), hook.id);
    let (status, again) = deliver(&url, "D1");
    assert_eq!(status, 202);
    assert_eq!(again, json!({"id": first["id"], "duplicate": true}));
    let (status, a) = deliver(&url, "D3");
    assert_eq!(status, 202);
    assert!(a.get("duplicate").is_none());
    assert_eq!(webhook_events(&d).len(), 4);
}

#[test]
fn endpoints_survive_a_restart_and_secrets_stay_in_the_file() {
    let mut d = Daemon::start();
    let mut c = d.connect();
    let signed = add(&d, &mut c, "github", Some(SECRET));
    let open = add(&d, &mut c, "open", None);
    // Unguessable: 128 random bits in base32.
    for id in [&signed.id, &open.id] {
        assert_eq!(id.len(), 26, "{id}");
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
    }
    let list = c.ok(json!({"op": "webhookList"}));
    assert!(!list.to_string().contains(SECRET), "{list}");
    let eps = list["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0]["id"], json!(signed.id));
    assert_eq!(eps[0]["hasSecret"], json!(true));
    assert_eq!(eps[1]["label"], "open");
    assert_eq!(eps[1]["hasSecret"], json!(false));
    assert_eq!(eps[1]["path"], json!(format!("/hooks/{}", open.id)));
    assert!(eps[1]["createdAt"].as_str().unwrap().ends_with('Z'));

    let file = d.dir.join("webhooks.json");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&file).unwrap().contains(SECRET));

    drop(c);
    d.stop();
    d.restart();
    let mut c = d.connect();
    let after = c.ok(json!({"op": "webhookList"}));
    let strip_urls = |v: &Value| {
        let mut v = v["endpoints"].clone();
        for e in v.as_array_mut().unwrap() {
            e.as_object_mut().unwrap().remove("url");
        }
        v
    };
    assert_eq!(strip_urls(&after), strip_urls(&list));
    let url = format!("{}/hooks/{}", d.webhook_url(), signed.id);
    let (status, _) = post(&url, &[("x-hub-signature-256", SIG)], BODY);
    assert_eq!(status, 202);

    let r = c.ok(json!({"op": "webhookRemove", "id": signed.id}));
    assert_eq!(r["removed"], json!(true));
    let (status, _) = post(&url, &[("x-hub-signature-256", SIG)], BODY);
    assert_eq!(status, 404);
    let r = c.ok(json!({"op": "webhookRemove", "id": signed.id}));
    assert_eq!(r["removed"], json!(false));
    drop(c);
    d.stop();
    d.restart();
    let mut c = d.connect();
    let list = c.ok(json!({"op": "webhookList"}));
    assert_eq!(list["endpoints"].as_array().unwrap().len(), 1);
    assert!(!std::fs::read_to_string(&file).unwrap().contains(SECRET));

    // Bad fields.
    c.err(json!({"op": "webhookAdd", "label": " "}), "bad_request");
    c.err(
        json!({"op": "webhookAdd", "label": "x", "secret": ""}),
        "bad_request",
    );
    c.err(json!({"op": "webhookAdd"}), "bad_request");
    c.err(json!({"op": "webhookRemove"}), "bad_request");
}

#[test]
fn webhook_events_reach_unclaimed_subscribers_and_personal_ones_only_when_asked() {
    let d = Daemon::start();
    let mut c = d.connect();
    let hook = add(&d, &mut c, "gh", None);
    // A router following live.
    let mut router = d.connect();
    let live = router.subscribe(json!({"mode": "unclaimed", "follow": true, "since": "tail"}));
    let (status, _) = post(
        &hook.url,
        &[
            ("x-github-event", "issues"),
            ("content-type", "application/json"),
        ],
        r#"{"action":"opened","repository":{"full_name":"o/r"},"sender":{"login":"bo"}}"#,
    );
    assert_eq!(status, 202);
    let f = router.frame();
    assert_eq!(f["sub"], json!(live));
    assert_eq!(f["event"]["line"], json!(hook.line));
    assert_eq!(f["event"]["text"], "issues.opened o/r by bo");

    let seen = |c: &mut Client, sub: Value| -> usize {
        let s = c.subscribe(sub);
        let (events, _) = c.drain(&s);
        events
            .iter()
            .filter(|e| e["event"]["station"] == "webhook")
            .count()
    };
    let never = "metro://claude/user/none";
    assert_eq!(
        seen(&mut c, json!({"mode": "unclaimed", "since": "start"})),
        1
    );
    assert_eq!(seen(&mut c, json!({"as": never, "since": "start"})), 0);
    assert_eq!(
        seen(
            &mut c,
            json!({"as": never, "since": "start", "mode": "mine-or-unclaimed", "includeWebhooks": true})
        ),
        1
    );
    assert_eq!(
        seen(
            &mut c,
            json!({"as": never, "since": "start", "mode": "mine-only", "includeWebhooks": true})
        ),
        0
    );
    // Claimed by A: A's strict subscription sees it with includeWebhooks
    // only, and the router no longer does.
    c.ok(json!({"op": "claim", "line": hook.line, "as": A}));
    assert_eq!(
        seen(
            &mut c,
            json!({"as": A, "since": "start", "mode": "mine-only", "includeWebhooks": true})
        ),
        1
    );
    assert_eq!(
        seen(
            &mut c,
            json!({"as": A, "since": "start", "mode": "mine-only"})
        ),
        0
    );
    assert_eq!(
        seen(&mut c, json!({"mode": "unclaimed", "since": "start"})),
        0
    );
}

#[test]
fn listener_off_or_port_taken_leaves_the_daemon_running() {
    let d = Daemon::start_with(&["--webhook-addr", "off"]);
    let mut c = d.connect();
    let row = c.ok(json!({"op": "stations"}))["stations"][3].clone();
    assert_eq!(row["name"], "webhook");
    assert_eq!(row["enabled"], json!(false));
    assert!(row["status"].as_str().unwrap().starts_with("off"), "{row}");
    // Endpoints can still be managed; there is no URL to give out.
    let a = c.ok(json!({"op": "webhookAdd", "label": "later"}));
    assert_eq!(a["url"], Value::Null);
    assert_eq!(
        c.ok(json!({"op": "webhookList"}))["endpoints"][0]["url"],
        Value::Null
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let d = Daemon::start_with(&["--webhook-addr", &addr]);
    let mut c = d.connect();
    let row = c.ok(json!({"op": "stations"}))["stations"][3].clone();
    assert!(
        row["status"]
            .as_str()
            .unwrap()
            .starts_with("down: cannot listen on"),
        "{row}"
    );
    assert_eq!(row["listen"], json!(addr));
    assert!(
        d.stderr().contains("webhook station down"),
        "{}",
        d.stderr()
    );
    c.ok(json!({"op": "publish", "event": {"line": "claude/user/x", "text": "still fine"}}));
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn metroctl_webhook_add_list_remove() {
    let d = Daemon::start();
    let added: Value = serde_json::from_str(&stdout(&run_ok(&mut metroctl(
        &d,
        &["webhook", "add", "github", "--secret", "sEcReT-3"],
    ))))
    .unwrap();
    let id = added["id"].as_str().unwrap();
    assert_eq!(
        added["url"],
        json!(format!("{}/hooks/{id}", d.webhook_url()))
    );
    // The secret from stdin, kept off the command line.
    let mut child = metroctl(&d, &["webhook", "add", "ci", "--secret", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"from-stdin\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let ci: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let (status, _) = post(
        ci["url"].as_str().unwrap(),
        &[("authorization", "Bearer from-stdin")],
        "x",
    );
    assert_eq!(status, 202);

    let list = stdout(&run_ok(&mut metroctl(&d, &["webhook", "list", "--json"])));
    let rows: Vec<Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["label"], "github");
    assert_eq!(rows[1]["hasSecret"], json!(true));
    // Secrets never appear (the marker cannot occur in a base32 id).
    assert!(!list.contains("sEcReT-3") && !list.contains("from-stdin"));

    let removed: Value = serde_json::from_str(&stdout(&run_ok(&mut metroctl(
        &d,
        &["webhook", "remove", id],
    ))))
    .unwrap();
    assert_eq!(removed["removed"], json!(true));
    let list = stdout(&run_ok(&mut metroctl(&d, &["webhook", "list", "--json"])));
    assert_eq!(list.lines().count(), 1);
}

#[test]
fn tunnel_setup_writes_a_cloudflared_config_and_check_reads_it() {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cf");
    let dir_s = dir.to_str().unwrap();
    let port = d.webhook_url().rsplit(':').next().unwrap().to_string();
    let out = stdout(&run_ok(&mut metroctl(
        &d,
        &[
            "tunnel",
            "setup",
            "metro",
            "Hooks.Example.com",
            "--config-dir",
            dir_s,
        ],
    )));
    let file = dir.join("metro.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    let cred = dir.join("metro.json");
    for want in [
        "tunnel: metro\n".to_string(),
        format!("credentials-file: \"{}\"\n", cred.display()),
        "ingress:\n".to_string(),
        "  - hostname: hooks.example.com\n".to_string(),
        "    path: \"^/hooks/\"\n".to_string(),
        format!("    service: \"http://127.0.0.1:{port}\"\n"),
        "  - service: http_status:404\n".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} missing from\n{text}");
    }
    assert!(
        text.find("hostname:").unwrap() < text.find("http_status:404").unwrap(),
        "the catch-all comes last"
    );
    for want in [
        format!(
            "cloudflared tunnel create --credentials-file {} metro",
            cred.display()
        ),
        "cloudflared tunnel route dns metro hooks.example.com".to_string(),
        format!("cloudflared tunnel --config {} run metro", file.display()),
    ] {
        assert!(out.contains(&want), "{want:?} missing from\n{out}");
    }
    // No silent overwrite.
    let again = metroctl(
        &d,
        &[
            "tunnel",
            "setup",
            "metro",
            "hooks.example.com",
            "--config-dir",
            dir_s,
        ],
    )
    .output()
    .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    // Without a daemon: the default address.
    let none = tmp.path().join("none.sock");
    run_ok(Command::new(METROCTL).arg("--socket").arg(&none).args([
        "tunnel",
        "setup",
        "other",
        "h.example.org",
        "--config-dir",
        dir_s,
    ]));
    let other = std::fs::read_to_string(dir.join("other.yml")).unwrap();
    assert!(
        other.contains("service: \"http://127.0.0.1:8787\""),
        "{other}"
    );

    // check: no cloudflared on an empty PATH, no credentials yet.
    let empty_path = tmp.path().join("bin");
    std::fs::create_dir(&empty_path).unwrap();
    let check = |args: &[&str]| {
        let out = metroctl(&d, args)
            .env("PATH", &empty_path)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        (out.status.success(), report)
    };
    let (ok, r) = check(&["tunnel", "check", "metro", "--config-dir", dir_s, "--json"]);
    assert!(!ok);
    assert_eq!(r["cloudflared"], Value::Null);
    let cfg = &r["configs"][0];
    assert_eq!(cfg["parses"], json!(true));
    assert_eq!(cfg["tunnel"], "metro");
    assert_eq!(cfg["credentialsFound"], json!(false));
    assert_eq!(
        cfg["ingress"][0]["service"],
        json!(format!("http://127.0.0.1:{port}"))
    );
    let problems = r["problems"].to_string();
    assert!(
        problems.contains("cloudflared is not on PATH"),
        "{problems}"
    );
    assert!(problems.contains("does not exist yet"), "{problems}");

    // With credentials and a cloudflared on PATH (never run), all is well.
    std::fs::write(&cred, "{}").unwrap();
    let fake = empty_path.join("cloudflared");
    std::fs::write(&fake, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, r) = check(&["tunnel", "check", "metro", "--config-dir", dir_s, "--json"]);
    assert!(ok, "{r}");
    assert_eq!(r["cloudflared"], json!(fake.display().to_string()));
    // doctor adds the daemon; `other.yml` routes to 8787, not to this
    // daemon's listener, and has no credentials: two problems.
    let (ok, r) = check(&["doctor", "--config-dir", dir_s, "--json"]);
    assert!(!ok);
    assert_eq!(r["daemon"]["webhook"]["status"], "ok");
    assert_eq!(r["configs"].as_array().unwrap().len(), 2);
    assert_eq!(r["problems"].as_array().unwrap().len(), 2, "{r}");

    // A broken file is reported as such.
    std::fs::write(&file, "tunnel: [metro\n").unwrap();
    let (ok, r) = check(&["tunnel", "check", "metro", "--config-dir", dir_s, "--json"]);
    assert!(!ok);
    assert_eq!(r["configs"][0]["parses"], json!(false));
}

#[test]
fn delivery_ids_are_seeded_from_the_end_of_the_log_only() {
    // 24 MiB of history with one webhook delivery near its start and one
    // near its end: startup reads the end only (the kernel's count of bytes
    // the process read), so only the recent delivery is known as stored.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    let id = "abcdefghijklmnopqrstuvwxyz";
    std::fs::write(
        dir.join("webhooks.json"),
        json!({"endpoints": [{"id": id, "label": "gh", "createdAt": "2026-01-01T00:00:00.000Z"}]})
            .to_string(),
    )
    .unwrap();
    let hook = |msg: &str, delivery: &str| {
        format!(
            "{{\"id\":\"{msg}\",\"ts\":\"2026-01-01T00:00:00.000Z\",\"station\":\"webhook\",\"kind\":\"inbound\",\"line\":\"metro://webhook/{id}\",\"from\":\"metro://webhook/{id}\",\"to\":\"metro://webhook/{id}\",\"messageId\":\"{delivery}\"}}\n"
        )
    };
    let filler = format!(
        "{{\"id\":\"msg_f\",\"ts\":\"2026-01-01T00:00:00.000Z\",\"station\":\"telegram\",\"kind\":\"inbound\",\"line\":\"metro://telegram/1\",\"from\":\"metro://telegram/user/1\",\"to\":\"metro://telegram/1\",\"text\":\"{}\"}}\n",
        "y".repeat(800)
    );
    let mut big = hook("msg_ancient", "D-ancient");
    while big.len() < 24 << 20 {
        big.push_str(&filler);
    }
    big.push_str(&hook("msg_recent", "D-recent"));
    big.push_str(&filler);
    std::fs::write(dir.join("history.jsonl"), &big).unwrap();
    drop(big);
    std::fs::set_permissions(
        dir.join("webhooks.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let d = Daemon::start_in(&dir, &[]);
    let rchar = bytes_read(d.pid());
    assert!(
        rchar < 8 << 20,
        "startup read {rchar} bytes of a 24 MiB log"
    );
    // A loosened endpoints file is tightened: it holds secrets.
    let mode = std::fs::metadata(dir.join("webhooks.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(d.stderr().contains("was readable by others"));

    let url = format!("{}/hooks/{id}", d.webhook_url());
    let (status, a) = post(&url, &[("x-github-delivery", "D-recent")], "again");
    assert_eq!(status, 202);
    assert_eq!(a, json!({"id": "msg_recent", "duplicate": true}));
    let (status, a) = post(&url, &[("x-github-delivery", "D-ancient")], "again");
    assert_eq!(status, 202);
    assert!(a.get("duplicate").is_none(), "{a}");
}

#[test]
fn a_corrupt_endpoints_file_or_bad_flag_stops_startup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("webhooks.json"), "{\"endpoints\": [{\"id\": 5}]}").unwrap();
    let start = |args: &[&str]| {
        Command::new(METROD)
            .arg("--state-dir")
            .arg(&dir)
            .args(args)
            .env("METRO_WEBHOOK_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = start(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("webhooks.json"), "{err}");
    std::fs::remove_file(dir.join("webhooks.json")).unwrap();
    for args in [
        ["--webhook-addr", "localhost"],
        ["--webhook-addr", "127.0.0.1"],
        ["--webhook-max-body", "12"],
    ] {
        let out = start(&args);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(!out.stderr.is_empty());
    }
}
