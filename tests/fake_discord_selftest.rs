//! The fake Discord (tests/fake_discord) on its own, without metrod: the
//! gateway with a bare WebSocket client, the REST API with reqwest, and
//! every payload it sends or builds read back with serenity's models.

mod fake_discord;

use std::time::Duration;

use fake_discord::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const DM: u64 = 300000000000000001;
const GUILD: u64 = 400000000000000001;
const GUILD_CHANNEL: u64 = 400000000000000002;
const ALICE: u64 = 500000000000000001;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(fake: &Fake) -> Ws {
    let url = format!("{}/?v=10&encoding=json", fake.gateway_url);
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    ws
}

/// What the next frame was.
#[derive(Debug)]
enum Got {
    Json(Value),
    Closed(Option<u16>),
    Gone,
}

async fn next(ws: &mut Ws) -> Got {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a gateway frame within 5 s");
        return match m {
            Some(Ok(WsMessage::Text(t))) => Got::Json(serde_json::from_str(&t).unwrap()),
            Some(Ok(WsMessage::Close(f))) => Got::Closed(f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => Got::Gone,
        };
    }
}

async fn recv(ws: &mut Ws) -> Value {
    match next(ws).await {
        Got::Json(v) => v,
        other => panic!("expected a frame, got {other:?}"),
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(WsMessage::Text(v.to_string())).await.unwrap();
}

fn identify(token: &str, intents: u64) -> Value {
    json!({"op": 2, "d": {
        "token": token,
        "intents": intents,
        "properties": {"os": "linux", "browser": "selftest", "device": "selftest"},
        "shard": [0, 1],
        "compress": false,
        "large_threshold": 250,
    }})
}

/// Reads the frame as serenity's shard does.
fn gateway_event(v: &Value) -> serenity::model::event::GatewayEvent {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("GatewayEvent: {e}: {v}"))
}

fn serenity_event(v: &Value) -> (u64, serenity::model::event::Event) {
    match gateway_event(v) {
        serenity::model::event::GatewayEvent::Dispatch(s, e) => (s, e),
        other => panic!("not a dispatch: {other:?}"),
    }
}

#[test]
fn gateway_identify_dispatch_resume() {
    use serenity::model::event::{Event, GatewayEvent};

    let fake = Fake::start();
    let rt = rt();
    let alice = user(ALICE, "alice", false);

    // HELLO, heartbeat, IDENTIFY, READY.
    let mut ws = rt.block_on(connect(&fake));
    let hello = rt.block_on(recv(&mut ws));
    assert_eq!(hello["op"], 10);
    assert_eq!(hello["d"]["heartbeat_interval"], 1000);
    assert!(matches!(gateway_event(&hello), GatewayEvent::Hello(1000)));
    rt.block_on(send(&mut ws, json!({"op": 1, "d": null})));
    let ack = rt.block_on(recv(&mut ws));
    assert_eq!(ack["op"], 11);
    assert!(matches!(gateway_event(&ack), GatewayEvent::HeartbeatAck));
    assert_eq!(fake.heartbeats(), 1);
    assert!(!fake.live());

    rt.block_on(send(
        &mut ws,
        identify(TOKEN, 1 | 512 | 4096 | MESSAGE_CONTENT),
    ));
    let ready = rt.block_on(recv(&mut ws));
    assert_eq!(ready["op"], 0);
    assert_eq!(ready["t"], "READY");
    assert_eq!(ready["s"], 1);
    let r: serenity::model::gateway::Ready =
        serde_json::from_value(ready["d"].clone()).expect("serenity Ready");
    assert_eq!(r.user.id.get(), BOT_ID);
    assert_eq!(r.user.name, "metro-bot");
    assert!(r.user.bot);
    assert_eq!(r.user.discriminator, None);
    assert_eq!(r.application.id.get(), APP_ID);
    assert_eq!(r.version, 10);
    assert_eq!(r.shard.map(|s| (s.id.0, s.total)), Some((0, 1)));
    assert_eq!(r.resume_gateway_url, fake.gateway_url);
    match serenity_event(&ready) {
        (1, Event::Ready(e)) => assert_eq!(e.ready.session_id, r.session_id),
        other => panic!("{other:?}"),
    }
    let session = r.session_id.clone();
    assert_eq!(fake.session_id(), Some(session.clone()));
    assert_eq!(fake.identifies().len(), 1);
    assert_eq!(fake.identifies()[0]["token"], TOKEN);
    assert!(fake.live());
    fake.wait_ready(1);

    // A scripted MESSAGE_CREATE arrives at once with seq 2.
    let m1 = message(DM, 1001, alice.clone(), "hello bot");
    assert_eq!(fake.dispatch("MESSAGE_CREATE", m1.clone()), 2);
    let got = rt.block_on(recv(&mut ws));
    assert_eq!((got["op"].clone(), got["s"].clone()), (json!(0), json!(2)));
    assert_eq!(got["t"], "MESSAGE_CREATE");
    assert_eq!(got["d"], m1);
    match serenity_event(&got) {
        (2, Event::MessageCreate(e)) => {
            assert_eq!(e.message.content, "hello bot");
            assert_eq!(e.message.author.id.get(), ALICE);
            assert_eq!(e.message.guild_id, None);
        }
        other => panic!("{other:?}"),
    }
    // ... and lands in the channel's history.
    assert_eq!(fake.messages(DM).len(), 1);

    // Disconnect with 4000; a dispatch while down is buffered.
    fake.disconnect(Some(4000));
    assert!(matches!(
        rt.block_on(next(&mut ws)),
        Got::Closed(Some(4000))
    ));
    assert!(!fake.live());
    let m2 = message(DM, 1002, alice.clone(), "while you were away");
    assert_eq!(fake.dispatch("MESSAGE_CREATE", m2.clone()), 3);

    // RESUME (serenity sends it before HELLO arrives, and "Bot "-prefixed).
    let mut ws = rt.block_on(connect(&fake));
    rt.block_on(send(
        &mut ws,
        json!({"op": 6, "d": {"token": format!("Bot {TOKEN}"), "session_id": session, "seq": 2}}),
    ));
    assert_eq!(rt.block_on(recv(&mut ws))["op"], 10);
    let replayed = rt.block_on(recv(&mut ws));
    assert_eq!(replayed["s"], 3);
    assert_eq!(replayed["d"], m2);
    let resumed = rt.block_on(recv(&mut ws));
    assert_eq!(resumed["t"], "RESUMED");
    assert_eq!(resumed["s"], 4);
    assert!(matches!(serenity_event(&resumed), (4, Event::Resumed(_))));
    assert_eq!(fake.resumed(), 1);
    assert_eq!(fake.resumes()[0]["seq"], 2);
    fake.wait_ready(2);
    assert!(fake.live());
    assert_eq!(fake.connections(), 2);

    // Live again: dispatches flow at once.
    assert_eq!(
        fake.dispatch(
            "TYPING_START",
            json!({"channel_id": DM.to_string(), "user_id": ALICE.to_string(), "timestamp": 1})
        ),
        5
    );
    assert_eq!(rt.block_on(recv(&mut ws))["s"], 5);
    assert_eq!(fake.last_seq(), 5);

    // op 7 RECONNECT.
    fake.send_reconnect();
    let r7 = rt.block_on(recv(&mut ws));
    assert_eq!(r7["op"], 7);
    assert!(matches!(gateway_event(&r7), GatewayEvent::Reconnect));

    // An abrupt drop: no close frame.
    fake.disconnect(None);
    assert!(matches!(rt.block_on(next(&mut ws)), Got::Gone));
    fake.wait("the connection gone", Duration::from_secs(5), |f| !f.live());

    // Resuming from seq 0 replays everything but RESUMED.
    let mut ws = rt.block_on(connect(&fake));
    assert_eq!(rt.block_on(recv(&mut ws))["op"], 10);
    rt.block_on(send(
        &mut ws,
        json!({"op": 6, "d": {"token": TOKEN, "session_id": session, "seq": 3}}),
    ));
    assert_eq!(rt.block_on(recv(&mut ws))["s"], 5);
    let resumed = rt.block_on(recv(&mut ws));
    assert_eq!(
        (resumed["t"].clone(), resumed["s"].clone()),
        (json!("RESUMED"), json!(6))
    );

    // op 9 resumable keeps the session; not resumable forgets it.
    fake.invalidate_session(true);
    let inv = rt.block_on(recv(&mut ws));
    assert_eq!(
        (inv["op"].clone(), inv["d"].clone()),
        (json!(9), json!(true))
    );
    assert!(matches!(
        gateway_event(&inv),
        GatewayEvent::InvalidateSession(true)
    ));
    fake.invalidate_session(false);
    let inv = rt.block_on(recv(&mut ws));
    assert_eq!(
        (inv["op"].clone(), inv["d"].clone()),
        (json!(9), json!(false))
    );
    assert!(!fake.live());
    assert_eq!(fake.session_id(), None);
    drop(ws);
    let mut ws = rt.block_on(connect(&fake));
    assert_eq!(rt.block_on(recv(&mut ws))["op"], 10);
    rt.block_on(send(
        &mut ws,
        json!({"op": 6, "d": {"token": TOKEN, "session_id": session, "seq": 6}}),
    ));
    let inv = rt.block_on(recv(&mut ws));
    assert_eq!(
        (inv["op"].clone(), inv["d"].clone()),
        (json!(9), json!(false))
    );

    // A dispatch with no session waits for the next IDENTIFY.
    let waiter = {
        std::thread::scope(|scope| {
            let h = scope.spawn(|| {
                fake.dispatch("MESSAGE_CREATE", message(DM, 1003, alice.clone(), "later"))
            });
            std::thread::sleep(Duration::from_millis(200));
            rt.block_on(send(&mut ws, identify(TOKEN, 513)));
            h.join().unwrap()
        })
    };
    assert_eq!(waiter, 2, "seq after the new session's READY");
    let ready2 = rt.block_on(recv(&mut ws));
    assert_eq!(
        (ready2["t"].clone(), ready2["s"].clone()),
        (json!("READY"), json!(1))
    );
    assert_ne!(ready2["d"]["session_id"], json!(session));
    assert_eq!(rt.block_on(recv(&mut ws))["s"], 2);
    assert_eq!(fake.readies(), 2);

    // A second IDENTIFY on the same connection: 4005.
    rt.block_on(send(&mut ws, identify(TOKEN, 513)));
    assert!(matches!(
        rt.block_on(next(&mut ws)),
        Got::Closed(Some(4005))
    ));

    // A bad token: 4004 (IDENTIFY and RESUME).
    let mut ws = rt.block_on(connect(&fake));
    assert_eq!(rt.block_on(recv(&mut ws))["op"], 10);
    rt.block_on(send(&mut ws, identify("not-the-token", 513)));
    assert!(matches!(
        rt.block_on(next(&mut ws)),
        Got::Closed(Some(4004))
    ));
    let mut ws = rt.block_on(connect(&fake));
    assert_eq!(rt.block_on(recv(&mut ws))["op"], 10);
    rt.block_on(send(
        &mut ws,
        json!({"op": 6, "d": {"token": "nope", "session_id": "x", "seq": 1}}),
    ));
    assert!(matches!(
        rt.block_on(next(&mut ws)),
        Got::Closed(Some(4004))
    ));

    // Privileged intents refused: 4014; without MESSAGE_CONTENT it works.
    fake.refuse_privileged_intents(true);
    let mut ws = rt.block_on(connect(&fake));
    assert_eq!(rt.block_on(recv(&mut ws))["op"], 10);
    rt.block_on(send(&mut ws, identify(TOKEN, 513 | MESSAGE_CONTENT)));
    assert!(matches!(
        rt.block_on(next(&mut ws)),
        Got::Closed(Some(4014))
    ));
    let mut ws = rt.block_on(connect(&fake));
    fake.set_heartbeat_interval(250);
    assert_eq!(rt.block_on(recv(&mut ws))["d"]["heartbeat_interval"], 1000);
    rt.block_on(send(&mut ws, identify(TOKEN, 513)));
    assert_eq!(rt.block_on(recv(&mut ws))["t"], "READY");
    fake.refuse_privileged_intents(false);
    let mut ws2 = rt.block_on(connect(&fake));
    assert_eq!(rt.block_on(recv(&mut ws2))["d"]["heartbeat_interval"], 250);
    drop(ws2);
    drop(ws);

    // Refused connections: the handshake fails.
    fake.refuse_connections(true);
    let before = fake.connections();
    let url = format!("{}/?v=10", fake.gateway_url);
    assert!(rt.block_on(tokio_tungstenite::connect_async(url)).is_err());
    assert_eq!(fake.connections(), before);
    fake.refuse_connections(false);
    let mut ws = rt.block_on(connect(&fake));
    assert_eq!(rt.block_on(recv(&mut ws))["op"], 10);
    assert_eq!(fake.connections(), before + 1);

    let ops: Vec<u64> = fake
        .gateway_received()
        .iter()
        .filter_map(|v| v["op"].as_u64())
        .collect();
    assert!(
        ops.contains(&1) && ops.contains(&2) && ops.contains(&6),
        "{ops:?}"
    );
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn auth() -> String {
    format!("Bot {TOKEN}")
}

fn header(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn post_json(fake: &Fake, channel: u64, body: Value) -> reqwest::blocking::Response {
    http()
        .post(format!("{}/api/v10/channels/{channel}/messages", fake.url))
        .header("Authorization", auth())
        .json(&body)
        .send()
        .unwrap()
}

const BOUNDARY: &str = "----fake-discord-selftest-7f3a";

/// (field, file name, content type, bytes)
type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

/// A multipart/form-data body.
fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, file, ct, bytes) in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let mut disp = format!("Content-Disposition: form-data; name=\"{field}\"");
        if let Some(f) = file {
            disp.push_str(&format!("; filename=\"{f}\""));
        }
        out.extend_from_slice(disp.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(ct) = ct {
            out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

fn as_message(v: &Value) -> serenity::model::channel::Message {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("serenity Message: {e}: {v}"))
}

#[test]
fn rest_messages_reactions_limits() {
    let fake = Fake::start();
    let api = format!("{}/api/v10", fake.url);
    let c = http();

    // Gateway lookup (no auth needed for /gateway).
    let g: Value = c
        .get(format!("{api}/gateway"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(g, json!({"url": fake.gateway_url}));
    let gb: Value = c
        .get(format!("{api}/gateway/bot"))
        .header("Authorization", auth())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let gb: serenity::model::gateway::BotGateway = serde_json::from_value(gb).unwrap();
    assert_eq!((gb.url.as_str(), gb.shards), (fake.gateway_url.as_str(), 1));

    // The bot user.
    let me: Value = c
        .get(format!("{api}/users/@me"))
        .header("Authorization", auth())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let me: serenity::model::user::CurrentUser = serde_json::from_value(me).unwrap();
    assert_eq!(
        (me.id.get(), me.name.as_str(), me.bot),
        (BOT_ID, "metro-bot", true)
    );

    // 401 on a wrong or missing token; 404 on unknown routes.
    for token in [Some("Bot wrong"), Some(TOKEN), None] {
        let mut req = c.get(format!("{api}/users/@me"));
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.json::<Value>().unwrap(),
            json!({"message": "401: Unauthorized", "code": 0})
        );
    }
    let r = c
        .get(format!("{api}/nowhere"))
        .header("Authorization", auth())
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"message": "404: Not Found", "code": 0})
    );

    // Seed a user message, then reply to it with a button.
    let alice = user(ALICE, "alice", false);
    fake.add_message(DM, message(DM, 1000, alice.clone(), "question?"));
    let components = json!([{"type": 1, "components": [
        {"type": 2, "style": 1, "label": "Yes", "custom_id": "yes"},
        {"type": 2, "style": 4, "label": "No", "custom_id": "no", "disabled": false},
    ]}]);
    let r = post_json(
        &fake,
        DM,
        json!({"content": "answer", "components": components, "message_reference": {"message_id": "1000"}}),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("50"));
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("49"));
    assert!(
        header(&r, "x-ratelimit-reset")
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 1.7e9
    );
    assert!(
        header(&r, "x-ratelimit-reset-after")
            .unwrap()
            .parse::<f64>()
            .unwrap()
            <= 1.0
    );
    assert!(header(&r, "x-ratelimit-bucket").is_some());
    let sent: Value = r.json().unwrap();
    let m = as_message(&sent);
    assert_eq!(m.id.get(), 900000000000000001);
    assert_eq!(m.content, "answer");
    assert_eq!(m.author.id.get(), BOT_ID);
    assert_eq!(m.channel_id.get(), DM);
    assert_eq!(u8::from(m.kind), 19);
    assert_eq!(m.components.len(), 1);
    assert_eq!(m.components[0].components.len(), 2);
    let reference = m.message_reference.as_ref().unwrap();
    assert_eq!(reference.message_id.map(|x| x.get()), Some(1000));
    assert_eq!(reference.channel_id.get(), DM);
    assert_eq!(m.referenced_message.as_ref().unwrap().content, "question?");
    assert!(m.edited_timestamp.is_none());
    assert!(sent["timestamp"].as_str().unwrap().ends_with("+00:00"));

    // Multipart: payload_json plus files[0], files[1].
    let payload = json!({"content": "two files", "attachments": [
        {"id": 0, "filename": "notes.txt", "description": "the notes"},
        {"id": 1, "filename": "a b.png"},
    ]});
    let png: &[u8] = &[0x89, b'P', b'N', b'G', 0, 1, 2];
    let body = multipart(&[
        (
            "payload_json",
            None,
            Some("application/json"),
            payload.to_string().as_bytes(),
        ),
        (
            "files[0]",
            Some("notes.txt"),
            Some("text/plain"),
            b"hello notes",
        ),
        ("files[1]", Some("a b.png"), None, png),
    ]);
    let r = c
        .post(format!("{api}/channels/{DM}/messages"))
        .header("Authorization", auth())
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let with_files: Value = r.json().unwrap();
    let m = as_message(&with_files);
    assert_eq!(m.content, "two files");
    assert_eq!(m.attachments.len(), 2);
    assert_eq!(m.attachments[0].filename, "notes.txt");
    assert_eq!(m.attachments[0].size, 11);
    assert_eq!(m.attachments[0].description.as_deref(), Some("the notes"));
    assert_eq!(m.attachments[0].content_type.as_deref(), Some("text/plain"));
    assert_eq!(m.attachments[1].filename, "a_b.png");
    assert_eq!(m.attachments[1].content_type.as_deref(), Some("image/png"));
    let aid = m.attachments[0].id.get();
    assert_eq!(
        m.attachments[0].url,
        format!("{}/cdn/attachments/{DM}/{aid}/notes.txt", fake.url)
    );
    let got = c.get(&m.attachments[0].url).send().unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().unwrap().as_ref(), b"hello notes");
    let got = c.get(&m.attachments[1].proxy_url).send().unwrap();
    assert_eq!(
        got.bytes().unwrap().as_ref(),
        &[0x89, b'P', b'N', b'G', 0, 1, 2]
    );
    assert_eq!(
        c.get(format!("{}/cdn/attachments/1/2/none.txt", fake.url))
            .send()
            .unwrap()
            .status(),
        404
    );
    fake.add_file("/cdn/attachments/1/2/seeded.txt", b"seeded");
    assert_eq!(
        c.get(format!("{}/cdn/attachments/1/2/seeded.txt", fake.url))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "seeded"
    );
    let calls = fake.calls_to("POST", &format!("/api/v10/channels/{DM}/messages"));
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].body["content"], "answer");
    assert_eq!(calls[0].header("authorization"), Some(auth().as_str()));
    assert_eq!(calls[1].body["content"], "two files");
    assert_eq!(
        calls[1].files,
        vec![
            ("files[0]".to_string(), "notes.txt".to_string(), 11),
            ("files[1]".to_string(), "a b.png".to_string(), 7),
        ]
    );
    assert!(calls.iter().all(|c| c.status == 200));

    // PATCH: only the keys sent change.
    let mid = 900000000000000001u64;
    let r = c
        .patch(format!("{api}/channels/{DM}/messages/{mid}"))
        .header("Authorization", auth())
        .json(&json!({"content": "answer (edited)"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let edited = as_message(&r.json::<Value>().unwrap());
    assert_eq!(edited.content, "answer (edited)");
    assert!(edited.edited_timestamp.is_some());
    assert_eq!(edited.components.len(), 1);
    let r = c
        .patch(format!("{api}/channels/{DM}/messages/{mid}"))
        .header("Authorization", auth())
        .json(&json!({"components": []}))
        .send()
        .unwrap();
    let edited = as_message(&r.json::<Value>().unwrap());
    assert_eq!(
        (edited.content.as_str(), edited.components.len()),
        ("answer (edited)", 0)
    );
    let r = c
        .patch(format!("{api}/channels/{DM}/messages/42"))
        .header("Authorization", auth())
        .json(&json!({"content": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"message": "Unknown Message", "code": 10008})
    );

    // GET list: newest first, limit, before, after; bad limits.
    let list = |q: &str| -> Vec<u64> {
        let v: Value = c
            .get(format!("{api}/channels/{DM}/messages?{q}"))
            .header("Authorization", auth())
            .send()
            .unwrap()
            .json()
            .unwrap();
        let ms: Vec<serenity::model::channel::Message> = serde_json::from_value(v).unwrap();
        ms.iter().map(|m| m.id.get()).collect()
    };
    let (a, b) = (900000000000000001u64, 900000000000000002u64);
    assert_eq!(list(""), vec![b, a, 1000]);
    assert_eq!(list("&limit=2"), vec![b, a]);
    assert_eq!(list(&format!("limit=1&before={b}")), vec![a]);
    assert_eq!(list(&format!("limit=50&before={b}")), vec![a, 1000]);
    assert_eq!(list("limit=1&after=1000"), vec![a]);
    assert_eq!(list("after=1000"), vec![b, a]);
    for bad in ["limit=0", "limit=101", "limit=x"] {
        let r = c
            .get(format!("{api}/channels/{DM}/messages?{bad}"))
            .header("Authorization", auth())
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().unwrap();
        assert_eq!(
            (v["message"].clone(), v["code"].clone()),
            (json!("Invalid Form Body"), json!(50035))
        );
    }
    assert_eq!(
        fake.messages(DM)
            .iter()
            .map(|m| m["id"].clone())
            .collect::<Vec<_>>(),
        vec![json!("1000"), json!(a.to_string()), json!(b.to_string())]
    );

    // Reactions (percent-encoded like serenity), then GET shows them.
    let thumbs = "%F0%9F%91%8D";
    let react = |method: reqwest::Method, msg: u64, emoji: &str| {
        c.request(
            method,
            format!("{api}/channels/{DM}/messages/{msg}/reactions/{emoji}/@me"),
        )
        .header("Authorization", auth())
        .send()
        .unwrap()
        .status()
        .as_u16()
    };
    assert_eq!(react(reqwest::Method::PUT, 1000, thumbs), 204);
    assert_eq!(react(reqwest::Method::PUT, 1000, "%E2%9C%85"), 204);
    assert_eq!(react(reqwest::Method::PUT, 1000, thumbs), 204);
    assert_eq!(react(reqwest::Method::PUT, 77, thumbs), 404);
    assert_eq!(fake.reactions(DM, 1000), vec!["👍", "✅"]);
    let v: Value = c
        .get(format!("{api}/channels/{DM}/messages/1000"))
        .header("Authorization", auth())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        v["reactions"][0]["emoji"],
        json!({"id": null, "name": "👍"})
    );
    assert_eq!(v["reactions"][0]["me"], true);
    assert_eq!(v["reactions"][0]["count"], 1);
    let m = as_message(&v);
    assert_eq!(m.reactions.len(), 2);
    assert!(m.reactions[0].me);
    assert_eq!(
        m.reactions[0].reaction_type,
        serenity::model::channel::ReactionType::Unicode("👍".into())
    );
    assert_eq!(react(reqwest::Method::DELETE, 1000, thumbs), 204);
    assert_eq!(fake.reactions(DM, 1000), vec!["✅"]);
    let r = c
        .get(format!("{api}/channels/{DM}/messages/5"))
        .header("Authorization", auth())
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    // Interaction callback.
    let r = c
        .post(format!("{api}/interactions/700/tok-en/callback"))
        .header("Authorization", auth())
        .json(&json!({"type": 6}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let cb = fake.wait_calls("POST", "/api/v10/interactions/700/", 1);
    assert_eq!(cb[0].body, json!({"type": 6}));

    // A strict bucket: 2 per 2 s per channel, then 429.
    fake.set_bucket(2, Duration::from_secs(2));
    for n in 0..2 {
        let r = post_json(&fake, GUILD_CHANNEL, json!({"content": format!("n{n}")}));
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "x-ratelimit-remaining"),
            Some((1 - n).to_string())
        );
    }
    let r = post_json(&fake, GUILD_CHANNEL, json!({"content": "n2"}));
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(header(&r, "x-ratelimit-scope").as_deref(), Some("user"));
    let reset_after: f64 = header(&r, "x-ratelimit-reset-after")
        .unwrap()
        .parse()
        .unwrap();
    let v: Value = r.json().unwrap();
    assert_eq!(v["message"], "You are being rate limited.");
    assert_eq!(v["global"], false);
    let secs = v["retry_after"].as_f64().unwrap();
    assert!(
        secs > 0.0 && secs <= 2.0 && (secs - reset_after).abs() < 0.01,
        "{secs}"
    );
    assert_eq!(fake.rate_limited(), 1);
    // Another channel has its own bucket.
    assert_eq!(
        post_json(&fake, DM, json!({"content": "other"})).status(),
        200
    );
    std::thread::sleep(Duration::from_secs_f64(secs + 0.05));
    assert_eq!(
        post_json(&fake, GUILD_CHANNEL, json!({"content": "n3"})).status(),
        200
    );
    assert_eq!(fake.messages(GUILD_CHANNEL).len(), 3);
    assert_eq!(
        fake.calls_to("POST", &format!("/api/v10/channels/{GUILD_CHANNEL}/"))
            .iter()
            .map(|c| c.status)
            .collect::<Vec<_>>(),
        vec![200, 200, 429, 200]
    );

    // Scripted failures: the next 2 POSTs to the channel fail, then pass.
    fake.set_bucket(50, Duration::from_secs(1));
    fake.fail_next(
        "post",
        &format!("/api/v10/channels/{DM}/messages"),
        2,
        503,
        json!({"message": "upstream", "code": 0}),
        vec![("X-Test".into(), "yes".into())],
    );
    let r = post_json(&fake, DM, json!({"content": "f1"}));
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "x-test").as_deref(), Some("yes"));
    assert_eq!(r.json::<Value>().unwrap()["message"], "upstream");
    // Other methods and paths are not affected.
    assert_eq!(react(reqwest::Method::PUT, 1000, thumbs), 204);
    assert_eq!(post_json(&fake, DM, json!({"content": "f2"})).status(), 503);
    assert_eq!(post_json(&fake, DM, json!({"content": "f3"})).status(), 200);
    fake.fail_next("GET", "/api/v10/users", 5, 500, json!({}), vec![]);
    fake.clear_failures();
    assert_eq!(
        c.get(format!("{api}/users/@me"))
            .header("Authorization", auth())
            .send()
            .unwrap()
            .status(),
        200
    );
    let all = fake.calls();
    assert!(all.iter().any(|c| c.status == 401));
    assert!(all.iter().any(|c| c.path.starts_with("/cdn/")));
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
}

#[test]
fn serenity_reads_the_payloads() {
    use serenity::model::application::Interaction;
    use serenity::model::channel::{Message, Reaction, ReactionType};
    use serenity::model::event::{Event, GatewayEvent, ReactionAddEvent, ReactionRemoveEvent};

    let alice = user(ALICE, "alice", false);
    let u: serenity::model::user::User = serde_json::from_value(alice.clone()).unwrap();
    assert_eq!(
        (u.id.get(), u.name.as_str(), u.bot),
        (ALICE, "alice", false)
    );
    assert_eq!(u.global_name.as_deref(), Some("alice"));
    let b: serenity::model::user::CurrentUser = serde_json::from_value(bot_user_full()).unwrap();
    assert!(b.bot);

    // A DM message and a guild message with member, attachment, reply.
    let dm = message(DM, 1001, alice.clone(), "hi");
    let m: Message = serde_json::from_value(dm.clone()).unwrap();
    assert_eq!(
        (m.id.get(), m.channel_id.get(), m.guild_id),
        (1001, DM, None)
    );
    let mut partial_member = member(alice.clone());
    partial_member.as_object_mut().unwrap().remove("user");
    let url = "http://127.0.0.1:1/cdn/attachments/1/2/x.png";
    let g = with(
        message(
            GUILD_CHANNEL,
            1002,
            alice.clone(),
            "<@123456789012345678> look",
        ),
        json!({
            "guild_id": GUILD.to_string(),
            "member": partial_member,
            "mentions": [bot_user()],
            "attachments": [attachment(77, "x.png", 1234, url, "image/png")],
            "message_reference": {"type": 0, "message_id": "1001", "channel_id": GUILD_CHANNEL.to_string(), "guild_id": GUILD.to_string()},
            "referenced_message": message(GUILD_CHANNEL, 1001, bot_user(), "earlier"),
            "edited_timestamp": "2025-01-02T03:04:05.123456+00:00",
            "type": 19,
        }),
    );
    let m: Message = serde_json::from_value(g.clone()).unwrap();
    assert_eq!(m.guild_id.map(|x| x.get()), Some(GUILD));
    assert!(m.member.is_some());
    assert_eq!(m.mentions[0].id.get(), BOT_ID);
    assert_eq!(m.attachments[0].url, url);
    assert_eq!(m.attachments[0].size, 1234);
    assert_eq!(m.referenced_message.as_ref().unwrap().content, "earlier");
    assert!(m.edited_timestamp.is_some());
    let wh = with(dm.clone(), json!({"webhook_id": "600000000000000001"}));
    let m: Message = serde_json::from_value(wh).unwrap();
    assert_eq!(m.webhook_id.map(|x| x.get()), Some(600000000000000001));

    // Whole frames as the shard reads them: must not fall into Unknown.
    let frame = |t: &str, d: &Value| json!({"op": 0, "s": 7, "t": t, "d": d});
    match serde_json::from_value::<GatewayEvent>(frame("MESSAGE_CREATE", &g)).unwrap() {
        GatewayEvent::Dispatch(7, Event::MessageCreate(e)) => assert_eq!(e.message.id.get(), 1002),
        other => panic!("{other:?}"),
    }

    // Reactions, guild and DM, add and remove.
    for guild in [Some(GUILD), None] {
        let add = reaction_add(DM, 1001, ALICE, "👍", guild);
        let r: Reaction = serde_json::from_value(add.clone()).unwrap();
        assert_eq!(r.user_id.map(|x| x.get()), Some(ALICE));
        assert_eq!(r.message_id.get(), 1001);
        assert_eq!(r.emoji, ReactionType::Unicode("👍".into()));
        assert_eq!(r.guild_id.map(|x| x.get()), guild);
        assert_eq!(r.member.is_some(), guild.is_some());
        let e: ReactionAddEvent = serde_json::from_value(add.clone()).unwrap();
        assert_eq!(e.reaction.channel_id.get(), DM);
        match serde_json::from_value::<GatewayEvent>(frame("MESSAGE_REACTION_ADD", &add)).unwrap() {
            GatewayEvent::Dispatch(_, Event::ReactionAdd(e)) => {
                assert_eq!(e.reaction.message_id.get(), 1001)
            }
            other => panic!("{other:?}"),
        }
        let rm = reaction_remove(DM, 1001, ALICE, "👍", guild);
        let e: ReactionRemoveEvent = serde_json::from_value(rm.clone()).unwrap();
        assert_eq!(e.reaction.user_id.map(|x| x.get()), Some(ALICE));
        match serde_json::from_value::<GatewayEvent>(frame("MESSAGE_REACTION_REMOVE", &rm)).unwrap()
        {
            GatewayEvent::Dispatch(_, Event::ReactionRemove(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    // A custom emoji in route form.
    let r: Reaction =
        serde_json::from_value(reaction_add(DM, 1, ALICE, "party:880000000000000001", None))
            .unwrap();
    assert!(matches!(r.emoji, ReactionType::Custom { id, .. } if id.get() == 880000000000000001));

    // Button interactions, guild and DM.
    let bot_msg = with(
        message(DM, 1003, bot_user(), "pick"),
        json!({"components": [{"type": 1, "components": [{"type": 2, "style": 1, "label": "Yes", "custom_id": "yes"}]}]}),
    );
    for guild in [Some(GUILD), None] {
        let d = button_interaction(700, "tok", DM, bot_msg.clone(), alice.clone(), "yes", guild);
        let i: Interaction =
            serde_json::from_value(d.clone()).unwrap_or_else(|e| panic!("{e}: {d}"));
        let c = i.as_message_component().expect("a component interaction");
        assert_eq!(c.id.get(), 700);
        assert_eq!(c.token, "tok");
        assert_eq!(c.data.custom_id, "yes");
        assert!(matches!(
            c.data.kind,
            serenity::model::application::ComponentInteractionDataKind::Button
        ));
        assert_eq!(c.user.id.get(), ALICE, "the user, from member in a guild");
        assert_eq!(c.member.is_some(), guild.is_some());
        assert_eq!(c.guild_id.map(|x| x.get()), guild);
        assert_eq!(c.message.id.get(), 1003);
        assert_eq!(c.channel_id.get(), DM);
        assert_eq!(c.application_id.get(), APP_ID);
        match serde_json::from_value::<GatewayEvent>(frame("INTERACTION_CREATE", &d)).unwrap() {
            GatewayEvent::Dispatch(_, Event::InteractionCreate(e)) => {
                assert_eq!(e.interaction.id().get(), 700)
            }
            other => panic!("{other:?}"),
        }
    }
}

/// serenity itself — its `Http` (through `proxy`, its ratelimiter off) and
/// a whole `Client` with its shard runner — against the fake.
#[test]
fn serenity_client_against_the_fake() {
    use std::sync::{Arc, Mutex};

    use serenity::all::{
        ChannelId, Client, Context, CreateAttachment, CreateMessage, EditMessage, EventHandler,
        GatewayIntents, GetMessages, HttpBuilder, Message, MessageId, ReactionType, Ready,
    };

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    #[serenity::async_trait]
    impl EventHandler for Seen {
        async fn ready(&self, _: Context, r: Ready) {
            self.0
                .lock()
                .unwrap()
                .push(format!("ready {}", r.user.name));
        }
        async fn resume(&self, _: Context, _: serenity::model::event::ResumedEvent) {
            self.0.lock().unwrap().push("resumed".into());
        }
        async fn message(&self, _: Context, m: Message) {
            self.0
                .lock()
                .unwrap()
                .push(format!("message {}", m.content));
        }
    }

    let fake = Fake::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http = HttpBuilder::new(TOKEN)
        .proxy(fake.url.clone())
        .ratelimiter_disabled(true)
        .build();
    let http = Arc::new(http);

    // REST through serenity's own Http.
    rt.block_on(async {
        assert_eq!(http.get_gateway().await.unwrap().url, fake.gateway_url);
        assert_eq!(http.get_current_user().await.unwrap().id.get(), BOT_ID);
        let ch = ChannelId::new(DM);
        let sent = ch
            .send_message(&http, CreateMessage::new().content("from serenity"))
            .await
            .unwrap();
        assert_eq!(sent.content, "from serenity");
        let with_file = ch
            .send_message(
                &http,
                CreateMessage::new()
                    .content("file")
                    .add_file(CreateAttachment::bytes(b"abc".to_vec(), "f.txt")),
            )
            .await
            .unwrap();
        assert_eq!(with_file.attachments[0].filename, "f.txt");
        let mut edited = sent.clone();
        edited
            .edit(&http, EditMessage::new().content("edited"))
            .await
            .unwrap();
        assert_eq!(edited.content, "edited");
        http.create_reaction(ch, sent.id, &ReactionType::Unicode("👍".into()))
            .await
            .unwrap();
        let got = ch.message(&http, sent.id).await.unwrap();
        assert!(got.reactions[0].me);
        let list = ch
            .messages(&http, GetMessages::new().limit(10))
            .await
            .unwrap();
        assert_eq!(
            list.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![with_file.id, sent.id]
        );
        let err = ch.message(&http, MessageId::new(5)).await.unwrap_err();
        assert!(err.to_string().contains("Unknown Message"), "{err}");
    });
    assert_eq!(fake.reactions(DM, 900000000000000001), vec!["👍"]);
    let upload = fake.calls_to("POST", &format!("/api/v10/channels/{DM}/messages"));
    assert_eq!(
        upload[1].files,
        vec![("files[0]".into(), "f.txt".into(), 3)]
    );
    assert_eq!(upload[1].body["content"], "file");

    // The gateway through serenity's shard runner: READY, a message, a
    // 4000 close and a RESUME that brings the buffered message.
    fake.set_heartbeat_interval(300);
    let seen = Seen::default();
    let intents = GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT;
    // `Client::builder(token)` would ask discord.com for the gateway: its
    // default Http has the ratelimiter on, which ignores `proxy`.
    let http2 = HttpBuilder::new(TOKEN)
        .proxy(fake.url.clone())
        .ratelimiter_disabled(true)
        .build();
    let handler = seen.clone();
    let mut client: Client = rt.block_on(async move {
        serenity::client::ClientBuilder::new_with_http(http2, intents)
            .event_handler(handler)
            .await
            .unwrap()
    });
    let manager = client.shard_manager.clone();
    let run = rt.spawn(async move { client.start().await });
    fake.wait_ready(1);
    let ident = &fake.identifies()[0];
    assert_eq!(
        ident["token"],
        format!("Bot {TOKEN}"),
        "serenity prefixes the token"
    );
    assert_eq!(ident["intents"], json!(intents.bits()));
    assert_eq!(ident["shard"], json!([0, 1]));
    let saw = |what: &str| seen.0.lock().unwrap().iter().any(|s| s == what);
    fake.wait("serenity's ready", PATIENCE, |_| saw("ready metro-bot"));
    let alice = user(ALICE, "alice", false);
    fake.dispatch(
        "MESSAGE_CREATE",
        message(DM, 2001, alice.clone(), "live one"),
    );
    fake.wait("the live message", PATIENCE, |_| saw("message live one"));
    fake.wait("a heartbeat", PATIENCE, |f| f.heartbeats() >= 1);

    fake.disconnect(Some(4000));
    fake.dispatch(
        "MESSAGE_CREATE",
        message(DM, 2002, alice.clone(), "buffered one"),
    );
    fake.wait_ready(2);
    assert_eq!(fake.resumed(), 1);
    assert_eq!(fake.resumes()[0]["seq"], 2);
    fake.wait("the buffered message", PATIENCE, |_| {
        saw("message buffered one")
    });
    fake.wait("serenity's resume", PATIENCE, |_| saw("resumed"));

    // An abrupt drop: serenity resumes too.
    fake.disconnect(None);
    fake.dispatch("MESSAGE_CREATE", message(DM, 2003, alice, "after a reset"));
    fake.wait_ready(3);
    fake.wait("the message after the reset", PATIENCE, |_| {
        saw("message after a reset")
    });
    assert_eq!(fake.readies(), 1, "never re-identified");

    rt.block_on(manager.shutdown_all());
    let _ = rt.block_on(run);
}

/// serenity gives up on a bad token (close 4004).
#[test]
fn serenity_client_bad_token() {
    use serenity::all::{GatewayIntents, HttpBuilder};

    let fake = Fake::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http = HttpBuilder::new("bad.token.here")
        .proxy(fake.url.clone())
        .ratelimiter_disabled(true)
        .build();
    let res = rt.block_on(async move {
        let mut client =
            serenity::client::ClientBuilder::new_with_http(http, GatewayIntents::DIRECT_MESSAGES)
                .await
                .unwrap();
        tokio::time::timeout(Duration::from_secs(15), client.start()).await
    });
    let err = res.expect("start returns").expect_err("a bad token fails");
    assert!(err.to_string().to_lowercase().contains("auth"), "{err}");
    assert_eq!(fake.readies(), 0);
    assert_eq!(fake.identifies().len(), 1);
}
