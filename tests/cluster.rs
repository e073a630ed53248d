//! Clusters (issue 18): metrod nodes on one machine (separate state dirs and
//! sockets) joined through a real nats-server with JetStream, which each
//! test starts on a free port with a temp store dir (Debian's nats-server;
//! .ci/run installs it).

mod common;
mod fake_discord;
mod fake_telegram;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fake_telegram::{text_update, Fake};
use serde_json::{json, Value};

/// Waits that span a server restart or a reconnect take longer than
/// PATIENCE's "at once".
const RECONNECT: Duration = Duration::from_secs(60);

/// The lease of the tests' nodes (short, so takeovers come soon; long
/// enough that a loaded machine still renews in time).
const LEASE: Duration = Duration::from_secs(4);

const ALICE: &str = "metro://claude/user/alice";
const BOB: &str = "metro://codex/user/bob";

/// A nats-server with JetStream on a free port and its own store dir.
struct Nats {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    log: PathBuf,
}

impl Nats {
    fn start() -> Nats {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let store = tempfile::tempdir().expect("tempdir");
        let log = store.path().join("nats.log");
        let mut n = Nats {
            child: None,
            port,
            store,
            log,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nats-server");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("nats log");
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.store.path().join("js"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start nats-server ({e}): install Debian's nats-server (.ci/run does)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

fn node(nats: &Nats, name: &str) -> Daemon {
    let url = nats.url();
    Daemon::start_with(&["--cluster", &url, "--cluster-node", name])
}

/// Nodes `a` and `b` on `nats`, both joined.
fn two_nodes(nats: &Nats) -> (Daemon, Daemon) {
    let a = node(nats, "a");
    let b = node(nats, "b");
    wait_joined(&a);
    wait_joined(&b);
    (a, b)
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `metroctl doctor --json`'s cluster check.
fn doctor_cluster(d: &Daemon) -> Value {
    let out = ctl_output(d, &["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["area"] == "cluster"))
        .cloned()
        .unwrap_or_else(|| panic!("no cluster check: {report}"))
}

fn cluster_stats(d: &Daemon) -> Value {
    d.connect().ok(json!({"op": "stats"}))["cluster"].clone()
}

/// Waits until the node has the stream and bucket and is connected.
fn wait_joined(d: &Daemon) {
    wait_for("the node joins", RECONNECT, || {
        let c = cluster_stats(d);
        (c["ready"] == json!(true) && c["connection"] == json!("connected")).then_some(())
    });
}

/// How often each event id appears in the node's log.
fn id_counts(d: &Daemon) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in d.history() {
        if let Some(id) = e["id"].as_str() {
            *m.entry(id.to_string()).or_default() += 1;
        }
    }
    m
}

/// Waits until every node's log holds every id in `ids`, then checks each
/// appears exactly once in every log.
fn wait_everywhere_once(nodes: &[&Daemon], ids: &[String]) {
    for d in nodes {
        wait_for("every event in every log", RECONNECT, || {
            let c = id_counts(d);
            ids.iter().all(|id| c.contains_key(id)).then_some(())
        });
    }
    for (i, d) in nodes.iter().enumerate() {
        let c = id_counts(d);
        for id in ids {
            assert_eq!(c.get(id), Some(&1), "node {i}: {id} must be logged once");
        }
    }
}

fn publish_text(d: &Daemon, text: &str) -> String {
    let mut c = d.connect();
    let a = publish(&mut c, json!({"line": "telegram/77", "text": text}));
    a["id"].as_str().expect("an id").to_string()
}

fn events_reach_every_node(n: usize) {
    let nats = Nats::start();
    let names = ["a", "b", "c"];
    let nodes: Vec<Daemon> = names[..n].iter().map(|name| node(&nats, name)).collect();
    for d in &nodes {
        wait_joined(d);
    }
    let mut follower = nodes[1].connect();
    let sub = follower.subscribe(json!({"follow": true, "since": "tail"}));
    let first = publish_text(&nodes[0], "hello from a");
    let f = follower.frame();
    assert_eq!(f["sub"], json!(sub));
    assert_eq!(f["event"]["text"], "hello from a");
    assert_eq!(f["event"]["id"], json!(first), "the id stays the same");
    assert_eq!(f["event"]["node"], "a", "a replica names its node");
    let mut ids = vec![first];
    for (i, d) in nodes.iter().enumerate() {
        ids.push(publish_text(d, &format!("from node {i}")));
    }
    let refs: Vec<&Daemon> = nodes.iter().collect();
    wait_everywhere_once(&refs, &ids);
    // A node's own events carry no `node`; the others' name theirs.
    for (i, d) in nodes.iter().enumerate() {
        for e in d.history() {
            let Some(text) = e["text"].as_str() else {
                continue;
            };
            let origin = if text == "hello from a" {
                0
            } else {
                text.trim_start_matches("from node ").parse().unwrap_or(99)
            };
            if origin == i {
                assert!(e.get("node").is_none(), "own event with node: {e}");
            } else {
                assert_eq!(e["node"], names[origin], "{e}");
            }
        }
    }
    wait_for("b's backlog is published", PATIENCE, || {
        (cluster_stats(&nodes[1])["unpublishedBytes"] == json!(0)).then_some(())
    });
    let s = follower.ok(json!({"op": "stats"}))["cluster"].clone();
    assert_eq!(s["node"], "b", "{s}");
    assert!(s["nodesSeen"].get("a").is_some(), "{s}");
    assert!(s["received"].as_u64().unwrap_or(0) >= 2, "{s}");
    // Replicas with `node`, and stats with `cluster`, are what the schema says.
    check_schema(&follower, &nodes[1]);
}

#[test]
fn an_event_reaches_the_other_node_once() {
    events_reach_every_node(2);
}

#[test]
fn an_event_reaches_three_nodes_once() {
    events_reach_every_node(3);
}

#[test]
fn a_nats_outage_loses_nothing_and_repeats_nothing() {
    let mut nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    let mut ids = vec![publish_text(&a, "before")];
    wait_everywhere_once(&[&a, &b], &ids);
    assert_eq!(doctor_cluster(&a)["status"], "ok");

    nats.stop();
    wait_for("a sees the server gone", RECONNECT, || {
        let c = cluster_stats(&a);
        c["connection"]
            .as_str()
            .is_some_and(|s| s.starts_with("disconnected"))
            .then_some(())
    });
    // Local publishing and local subscribers go on.
    let mut local = a.connect();
    let sub = local.subscribe(json!({"follow": true, "since": "tail"}));
    for i in 0..5 {
        ids.push(publish_text(&a, &format!("during a{i}")));
    }
    for i in 0..5 {
        let f = local.frame();
        assert_eq!(f["sub"], json!(sub));
        assert_eq!(f["event"]["text"], format!("during a{i}"));
    }
    ids.push(publish_text(&b, "during b"));
    // Durable claims need the shared map: a clear error, nothing changed.
    let err = a.connect().err(
        json!({"op": "claim", "line": "telegram/9", "as": ALICE}),
        "internal",
    );
    assert!(
        err["message"].as_str().unwrap_or("").contains("claims map"),
        "{err}"
    );
    let s = cluster_stats(&a);
    assert!(s["unpublishedBytes"].as_u64().unwrap_or(0) > 0, "{s}");
    let doc = doctor_cluster(&a);
    assert_eq!(doc["status"], "problem", "{doc}");
    assert!(
        doc["detail"]
            .as_str()
            .unwrap_or("")
            .contains("cannot reach NATS"),
        "{doc}"
    );

    nats.spawn();
    wait_everywhere_once(&[&a, &b], &ids);
    // In order on the other node too.
    let texts: Vec<String> = b
        .history()
        .iter()
        .filter_map(|e| e["text"].as_str().map(str::to_string))
        .filter(|t| t.starts_with("during a"))
        .collect();
    assert_eq!(
        texts,
        (0..5).map(|i| format!("during a{i}")).collect::<Vec<_>>()
    );
    wait_for("the backlog is published", RECONNECT, || {
        (cluster_stats(&a)["unpublishedBytes"] == json!(0)).then_some(())
    });
    wait_joined(&a);
    a.connect()
        .ok(json!({"op": "claim", "line": "telegram/9", "as": ALICE}));
    wait_for("b sees the claim made after the outage", PATIENCE, || {
        let c = b.connect().ok(json!({"op": "claims"}))["claims"].clone();
        (c["metro://telegram/9"] == json!(ALICE)).then_some(())
    });
}

#[test]
fn a_restarted_node_resumes_its_consumer_and_catches_up() {
    let nats = Nats::start();
    let (a, mut b) = two_nodes(&nats);
    let mut ids = vec![publish_text(&a, "first")];
    wait_everywhere_once(&[&a, &b], &ids);
    b.stop();
    for i in 0..5 {
        ids.push(publish_text(&a, &format!("while b was away {i}")));
    }
    b.restart();
    wait_everywhere_once(&[&a, &b], &ids);
    // And once more after a kill -9 (nothing written at shutdown).
    b.kill9();
    ids.push(publish_text(&a, "after the kill"));
    b.restart();
    ids.push(publish_text(&b, "b is back"));
    wait_everywhere_once(&[&a, &b], &ids);
}

#[test]
fn two_nodes_racing_for_a_line_get_one_winner_each_time() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    let mut ca = a.connect();
    let mut cb = b.connect();
    let mut winners = HashMap::new();
    for i in 0..100 {
        let line = format!("metro://telegram/-100/{i}");
        let req = |who: &str| json!({"op": "claim", "line": line, "as": who, "ifFree": true});
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| ca.request(req(ALICE)));
            let hb = s.spawn(|| cb.request(req(BOB)));
            (ha.join().expect("a"), hb.join().expect("b"))
        });
        let oks = [&ra, &rb].iter().filter(|r| r["ok"] == json!(true)).count();
        assert_eq!(oks, 1, "round {i}: one winner: {ra} / {rb}");
        let (winner, loser) = if ra["ok"] == json!(true) {
            (ALICE, &rb)
        } else {
            (BOB, &ra)
        };
        assert_eq!(loser["error"]["code"], "conflict", "round {i}: {loser}");
        assert_eq!(loser["error"]["owner"], winner, "round {i}: {loser}");
        winners.insert(line, winner.to_string());
    }
    // Every node agrees, in memory and in its claims.json.
    for d in [&a, &b] {
        wait_for("every node has every claim", PATIENCE, || {
            let claims = d.connect().ok(json!({"op": "claims"}))["claims"].clone();
            winners
                .iter()
                .all(|(line, who)| claims[line] == json!(who))
                .then_some(())
        });
        let file: Value = wait_for("claims.json holds them", PATIENCE, || {
            let v: Value =
                serde_json::from_slice(&std::fs::read(d.dir.join("claims.json")).ok()?).ok()?;
            winners
                .iter()
                .all(|(line, who)| v[line] == json!(who))
                .then_some(v)
        });
        assert_eq!(file.as_object().map(|o| o.len()), Some(100));
    }
    // A release on one node frees the line on the other.
    let line = "metro://telegram/-100/7";
    ca.ok(json!({"op": "release", "line": line}));
    wait_for("b sees the release", PATIENCE, || {
        let claims = b.connect().ok(json!({"op": "claims"}))["claims"].clone();
        claims.get(line).is_none().then_some(())
    });
    cb.ok(json!({"op": "claim", "line": line, "as": BOB, "ifFree": true}));
}

#[test]
fn a_hand_edit_of_claims_json_reaches_the_other_nodes() {
    let nats = Nats::start();
    let (a, b) = two_nodes(&nats);
    a.connect()
        .ok(json!({"op": "claim", "line": "telegram/1", "as": ALICE}));
    let claims_of = |d: &Daemon| d.connect().ok(json!({"op": "claims"}))["claims"].clone();
    wait_for("b sees a's claim", PATIENCE, || {
        (claims_of(&b)["metro://telegram/1"] == json!(ALICE)).then_some(())
    });
    // By hand on a: telegram/1 goes, telegram/2 is bob's.
    let path = a.dir.join("claims.json");
    let tmp = a.dir.join("claims.json.edit");
    std::fs::write(&tmp, json!({"metro://telegram/2": BOB}).to_string()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    for d in [&a, &b] {
        wait_for("the hand edit is in force everywhere", PATIENCE, || {
            let c = claims_of(d);
            (c["metro://telegram/2"] == json!(BOB) && c.get("metro://telegram/1").is_none())
                .then_some(())
        });
    }
    // Ephemeral claims stay on their node.
    let mut holder = a.connect();
    holder.ok(json!({"op": "claim", "line": "telegram/3", "as": ALICE, "ephemeral": true}));
    b.connect()
        .ok(json!({"op": "claim", "line": "telegram/4", "as": BOB}));
    wait_for("a sees b's claim", PATIENCE, || {
        (claims_of(&a)["metro://telegram/4"] == json!(BOB)).then_some(())
    });
    let on_a = a.connect().ok(json!({"op": "claims"}));
    assert!(on_a.to_string().contains("metro://telegram/3"), "{on_a}");
    let on_b = b.connect().ok(json!({"op": "claims"}));
    assert!(!on_b.to_string().contains("metro://telegram/3"), "{on_b}");
}

#[test]
fn an_event_too_large_for_nats_stays_local_and_publishing_goes_on() {
    let nats = Nats::start();
    let url = nats.url();
    let a = Daemon::start_with(&[
        "--cluster",
        &url,
        "--cluster-node",
        "a",
        "--max-request-bytes",
        "4M",
    ]);
    let b = node(&nats, "b");
    wait_joined(&a);
    wait_joined(&b);
    let big = publish_text(&a, &"x".repeat(1_500_000));
    let small = publish_text(&a, "after the big one");
    wait_everywhere_once(&[&a, &b], std::slice::from_ref(&small));
    assert!(
        !id_counts(&b).contains_key(&big),
        "the big event stays on a"
    );
    assert_eq!(id_counts(&a).get(&big), Some(&1));
    let s = cluster_stats(&a);
    assert_eq!(s["tooLarge"], 1, "{s}");
}

/// A node with the fake's Telegram token, reaching it as `host` (so the
/// fake tells the nodes apart), with a lease of [`LEASE`].
fn tg_node(nats: &Nats, name: &str, fake: &Fake, host: &str) -> Daemon {
    tg_node_lease(nats, name, fake, host, LEASE)
}

fn tg_node_lease(nats: &Nats, name: &str, fake: &Fake, host: &str, lease: Duration) -> Daemon {
    let port = fake.url.rsplit(':').next().expect("a port");
    let mut env = fake.env("42");
    for (k, v) in env.iter_mut() {
        if k == "METRO_TELEGRAM_API_URL" {
            *v = format!("http://{host}:{port}");
        }
    }
    leased_node(nats, name, lease, &env)
}

/// A node on `nats` with a station lease of `lease` and `env` (a fake
/// platform's URLs and token).
fn leased_node(nats: &Nats, name: &str, lease: Duration, env: &[(String, String)]) -> Daemon {
    let url = nats.url();
    Daemon::start_env(
        &[
            "--cluster",
            &url,
            "--cluster-node",
            name,
            "--cluster-lease",
            &format!("{}s", lease.as_secs()),
        ],
        env,
    )
}

/// The node that runs the telegram station, once one does and every node
/// says so (`stations` rows and `stats.cluster.stations`).
fn telegram_holder(nodes: &[(&str, &Daemon)]) -> usize {
    holder_of("telegram", nodes)
}

fn holder_of(station: &str, nodes: &[(&str, &Daemon)]) -> usize {
    wait_for(
        &format!("one node runs the {station} station"),
        RECONNECT,
        || {
            let running: Vec<usize> = nodes
                .iter()
                .enumerate()
                .filter(|(_, (_, d))| station_row(d, station)["status"] == "ok")
                .map(|(i, _)| i)
                .collect();
            let [one] = running[..] else { return None };
            let holder = nodes[one].0;
            nodes
                .iter()
                .all(|(_, d)| {
                    station_row(d, station)["node"] == holder
                        && cluster_stats(d)["stations"][station] == holder
                })
                .then_some(one)
        },
    )
}

/// The `updateId`s of the telegram events in `events`, by event id (a
/// replica and its original count once).
fn update_ids(events: &[Value]) -> HashMap<String, i64> {
    events
        .iter()
        .filter(|e| e["station"] == "telegram")
        .filter_map(|e| Some((e["id"].as_str()?.to_string(), e["updateId"].as_i64()?)))
        .collect()
}

fn poll_hosts(fake: &Fake, from: usize) -> Vec<String> {
    let mut hosts: Vec<String> = fake.calls("getUpdates")[from..]
        .iter()
        .map(|c| c.host.clone())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

#[test]
fn one_node_polls_a_bot_and_another_takes_over_after_a_kill_losing_and_repeating_nothing() {
    let nats = Nats::start();
    let fake = Fake::start();
    let hosts = ["127.0.0.1", "localhost"];
    let mut nodes = [
        tg_node(&nats, "a", &fake, hosts[0]),
        tg_node(&nats, "b", &fake, hosts[1]),
    ];
    for d in &nodes {
        wait_joined(d);
    }
    let h = telegram_holder(&[("a", &nodes[0]), ("b", &nodes[1])]);
    let other = 1 - h;
    // Two updates stored and confirmed, then one the old poller stores but
    // never confirms (the fake hangs the confirming call): the new poller
    // is handed it again and must skip it.
    let mut before: Vec<i64> = (0..2)
        .map(|i| fake.push(text_update(100 + i, 42, 42, "Ann", &format!("before {i}"))))
        .collect();
    wait_for("the first updates are confirmed", RECONNECT, || {
        fake.pending().is_empty().then_some(())
    });
    fake.freeze_confirmations(true);
    let unconfirmed = fake.push(text_update(102, 42, 42, "Ann", "before 2"));
    before.push(unconfirmed);
    for d in &nodes {
        let deadline = Instant::now() + RECONNECT;
        while !before
            .iter()
            .all(|u| update_ids(&d.history()).values().any(|x| x == u))
        {
            if Instant::now() > deadline {
                let calls: Vec<String> = fake
                    .all_calls()
                    .iter()
                    .map(|c| format!("{} {} {}", c.method, c.host, c.params))
                    .collect();
                panic!(
                    "the first updates are not in every log: {:?} / {:?}\ncalls {calls:#?}\n\
                     a: {}\nb: {}",
                    update_ids(&nodes[0].history()),
                    update_ids(&nodes[1].history()),
                    nodes[0].stderr(),
                    nodes[1].stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(
        poll_hosts(&fake, 0).len(),
        1,
        "one node polls: {:?}",
        poll_hosts(&fake, 0)
    );
    assert!(poll_hosts(&fake, 0)[0].starts_with(hosts[h]));
    nodes[h].kill9();
    let polls_at_kill = fake.calls("getUpdates").len();
    fake.freeze_confirmations(false);
    let after: Vec<i64> = (0..3)
        .map(|i| fake.push(text_update(200 + i, 42, 42, "Ann", &format!("after {i}"))))
        .collect();
    let survivor = &nodes[other];
    wait_for(
        "the other node takes over and stores the new updates",
        RECONNECT,
        || {
            let got = update_ids(&survivor.history());
            after
                .iter()
                .all(|u| got.values().any(|x| x == u))
                .then_some(())
        },
    );
    let names = ["a", "b"];
    assert_eq!(station_row(survivor, "telegram")["node"], names[other]);
    let new_hosts = poll_hosts(&fake, polls_at_kill);
    assert_eq!(new_hosts.len(), 1, "{new_hosts:?}");
    assert!(new_hosts[0].starts_with(hosts[other]), "{new_hosts:?}");
    // Handed the unconfirmed update again, it skipped it.
    assert!(
        fake.handed_out(unconfirmed) >= 2,
        "update {unconfirmed} came again"
    );
    assert!(
        station_counters(survivor, "telegram")["duplicates"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{}",
        station_counters(survivor, "telegram")
    );
    wait_for("the new poller confirms everything", PATIENCE, || {
        fake.pending().is_empty().then_some(())
    });
    // Across both logs (a replica and its original are one event): every
    // update once.
    let mut all = update_ids(&nodes[h].history());
    all.extend(update_ids(&survivor.history()));
    let mut per_update: HashMap<i64, usize> = HashMap::new();
    for u in all.values() {
        *per_update.entry(*u).or_default() += 1;
    }
    for u in before.iter().chain(&after) {
        assert_eq!(per_update.get(u), Some(&1), "update {u}: {per_update:?}");
    }
    assert_eq!(per_update.len(), 6, "{per_update:?}");
}

/// How many events of `d`'s log carry Telegram update `u`.
fn copies_of_update(d: &Daemon, u: i64) -> usize {
    d.history()
        .iter()
        .filter(|e| e["station"] == "telegram" && e["updateId"] == json!(u))
        .count()
}

/// The hole of a takeover: the holder stores an update while NATS is
/// unreachable (it cannot publish it) and never confirms it to Telegram,
/// then dies. The new holder is handed the update again and stores it; the
/// old node, restarted, publishes its own copy later. Each log keeps one.
#[test]
fn an_update_stored_by_a_dead_holder_and_by_its_successor_is_logged_once_on_every_node() {
    let mut nats = Nats::start();
    let fake = Fake::start();
    let hosts = ["127.0.0.1", "localhost"];
    // The default lease: the holder has several seconds between the
    // server's going away and its stopping the station, to store the
    // update.
    let lease = Duration::from_secs(10);
    let mut nodes = [
        tg_node_lease(&nats, "a", &fake, hosts[0], lease),
        tg_node_lease(&nats, "b", &fake, hosts[1], lease),
    ];
    for d in &nodes {
        wait_joined(d);
    }
    let h = telegram_holder(&[("a", &nodes[0]), ("b", &nodes[1])]);
    let other = 1 - h;
    let first = fake.push(text_update(100, 42, 42, "Ann", "first"));
    for d in &nodes {
        wait_for("the first update is in every log", RECONNECT, || {
            (copies_of_update(d, first) == 1).then_some(())
        });
    }
    wait_for("the first update is confirmed", RECONNECT, || {
        fake.pending().is_empty().then_some(())
    });

    // NATS goes away; the holder stores the update but cannot publish it,
    // and its confirming poll never reaches Telegram.
    fake.freeze_confirmations(true);
    nats.stop();
    let u = fake.push(text_update(101, 42, 42, "Ann", "stored twice?"));
    wait_for(
        "the holder stores the update while NATS is away",
        RECONNECT,
        || (copies_of_update(&nodes[h], u) == 1).then_some(()),
    );
    nodes[h].kill9();
    assert_eq!(fake.pending(), vec![u], "the update is not confirmed");
    fake.freeze_confirmations(false);

    // NATS back: the other node takes the station over, is handed the
    // update again and stores its own copy (it never saw the dead one's).
    nats.spawn();
    wait_joined(&nodes[other]);
    wait_for("the new holder stores the update", RECONNECT, || {
        (copies_of_update(&nodes[other], u) == 1).then_some(())
    });
    wait_for("the new holder confirms it", RECONNECT, || {
        fake.pending().is_empty().then_some(())
    });
    assert_eq!(copies_of_update(&nodes[h], u), 1);
    let theirs = nodes[other]
        .history()
        .into_iter()
        .find(|e| e["updateId"] == json!(u))
        .and_then(|e| e["id"].as_str().map(str::to_string))
        .expect("the new holder's copy");
    let ours = nodes[h]
        .history()
        .into_iter()
        .find(|e| e["updateId"] == json!(u))
        .and_then(|e| e["id"].as_str().map(str::to_string))
        .expect("the dead holder's copy");
    assert_ne!(theirs, ours, "two copies under two ids");

    // The old holder comes back: it publishes its copy and receives the
    // new holder's. An event each node publishes after that marks the
    // point where the other has gone past both copies.
    nodes[h].restart();
    wait_joined(&nodes[h]);
    let marks = [
        publish_text(&nodes[h], "the old holder is back"),
        publish_text(&nodes[other], "the new holder goes on"),
    ];
    wait_everywhere_once(&[&nodes[0], &nodes[1]], &marks);
    wait_for("the old holder's backlog is published", RECONNECT, || {
        (cluster_stats(&nodes[h])["unpublishedBytes"] == json!(0)).then_some(())
    });
    for (i, d) in nodes.iter().enumerate() {
        assert_eq!(
            copies_of_update(d, u),
            1,
            "node {i} logs update {u} once: {:?}",
            update_ids(&d.history())
        );
        let dup = cluster_stats(d)["duplicates"].as_u64().unwrap_or(0);
        assert!(dup >= 1, "node {i} skipped the other copy: {dup}");
    }
    // Each node kept the copy it had first.
    let id_of = |d: &Daemon| {
        d.history()
            .into_iter()
            .find(|e| e["updateId"] == json!(u))
            .and_then(|e| e["id"].as_str().map(str::to_string))
    };
    assert_eq!(id_of(&nodes[h]), Some(ours));
    assert_eq!(id_of(&nodes[other]), Some(theirs));

    // Later updates flow as before: once in every log.
    let later = fake.push(text_update(102, 42, 42, "Ann", "later"));
    for d in &nodes {
        wait_for("the later update is in every log", RECONNECT, || {
            (copies_of_update(d, later) == 1).then_some(())
        });
    }
    assert_eq!(copies_of_update(&nodes[0], first), 1);
    assert_eq!(copies_of_update(&nodes[1], first), 1);
}

#[test]
fn a_reply_through_another_node_reaches_the_platform_once() {
    let nats = Nats::start();
    let fake = Fake::start();
    let hosts = ["127.0.0.1", "localhost"];
    let nodes = [
        tg_node(&nats, "a", &fake, hosts[0]),
        tg_node(&nats, "b", &fake, hosts[1]),
    ];
    for d in &nodes {
        wait_joined(d);
    }
    let h = telegram_holder(&[("a", &nodes[0]), ("b", &nodes[1])]);
    let (owner, other) = (&nodes[h], &nodes[1 - h]);
    fake.push(text_update(77, 42, 42, "Ann", "hello"));
    let inbound = wait_for("the message reaches the other node", RECONNECT, || {
        other
            .history()
            .into_iter()
            .find(|e| e["text"] == "hello" && e["kind"] == "inbound")
    });
    assert_eq!(inbound["node"], ["a", "b"][h], "{inbound}");
    let id = inbound["id"].as_str().expect("an id").to_string();
    let mut c = other.connect();
    let answer = c.ok(json!({
        "op": "send", "line": "telegram/42", "text": "hi from the other node",
        "replyTo": id, "from": ALICE, "idempotencyKey": "k1",
    }));
    assert_eq!(answer["claim"], "claimed", "{answer}");
    let sends = fake.calls("sendMessage");
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(sends[0].params["text"], "hi from the other node");
    assert_eq!(sends[0].params["reply_parameters"]["message_id"], 77);
    assert!(sends[0].host.starts_with(hosts[h]), "sent by the owner");
    // The same key again: the first answer, nothing sent twice.
    let again = c.ok(json!({
        "op": "send", "line": "telegram/42", "text": "hi from the other node",
        "replyTo": id, "from": ALICE, "idempotencyKey": "k1",
    }));
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(fake.calls("sendMessage").len(), 1);
    // Logged once, on every node; claimed on every node.
    let out_id = answer["id"].as_str().expect("an id").to_string();
    wait_everywhere_once(&[owner, other], &[out_id]);
    wait_for("the owner sees the auto-claim", PATIENCE, || {
        let cl = owner.connect().ok(json!({"op": "claims"}))["claims"].clone();
        (cl["metro://telegram/42"] == ALICE).then_some(())
    });
    // An error comes back as the owner gives it.
    let bad = json!({"op": "edit", "line": "telegram/42", "messageId": "msg_nope", "text": "x"});
    let there = owner.connect().request(bad.clone());
    let here = other.connect().request(bad);
    assert_eq!(here["ok"], false, "{here}");
    assert_eq!(
        here["error"]["code"], there["error"]["code"],
        "{here} / {there}"
    );
    assert_eq!(here["error"]["message"], there["error"]["message"]);
    // Through the other node, react and edit reach the platform too.
    let mid = answer["messageId"].clone();
    other.connect().ok(json!({
        "op": "edit", "line": "telegram/42", "messageId": mid, "text": "edited",
    }));
    assert_eq!(fake.calls("editMessageText").len(), 1);
    // metroctl status says where the station runs.
    let status = ctl_ok(other, &["status"]);
    assert!(
        status.contains(&format!("node {}", ["a", "b"][h])),
        "{status}"
    );
    let doc = doctor_cluster(other);
    assert!(
        doc["detail"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("telegram on node {}", ["a", "b"][h])),
        "{doc}"
    );
    // Rows with `node`, stats with `cluster.stations`: what the schema says.
    let rows = c.ok(json!({"op": "stations"}));
    let row = rows["stations"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "telegram"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["node"], ["a", "b"][h], "{row}");
    assert!(
        row["status"].as_str().unwrap_or("").starts_with("standby"),
        "{row}"
    );
    c.ok(json!({"op": "stats"}));
    check_schema(&c, other);
}

#[test]
fn a_station_whose_lease_cannot_be_renewed_stops_polling() {
    let mut nats = Nats::start();
    let fake = Fake::start();
    let a = tg_node(&nats, "a", &fake, "127.0.0.1");
    wait_joined(&a);
    telegram_holder(&[("a", &a)]);
    fake.wait_calls("getUpdates", 1);
    nats.stop();
    let status = wait_station_status(&a, "telegram", "standby", |s| s.starts_with("standby"));
    assert!(status.contains("renewed"), "{status}");
    // No poll after that: the same count a few lease times later.
    let polls = fake.calls("getUpdates").len();
    std::thread::sleep(LEASE * 2);
    assert_eq!(fake.calls("getUpdates").len(), polls, "it polled again");
    // Local ops go on; telegram ops say why they cannot go out.
    publish_text(&a, "still local");
    let err = a.connect().err(
        json!({"op": "send", "line": "telegram/42", "text": "x"}),
        "unavailable",
    );
    assert!(
        err["message"].as_str().unwrap_or("").contains("lease"),
        "{err}"
    );
    // NATS back: the node takes its lease again and polls.
    nats.spawn();
    wait_station_status(&a, "telegram", "ok", |s| s == "ok");
    fake.wait_calls("getUpdates", polls + 1);
}

#[test]
fn one_node_holds_the_discord_gateway_and_the_other_fetches_through_it() {
    let nats = Nats::start();
    let fake = fake_discord::Fake::start();
    let env = fake.env("*");
    let nodes = [
        leased_node(&nats, "a", LEASE, &env),
        leased_node(&nats, "b", LEASE, &env),
    ];
    for d in &nodes {
        wait_joined(d);
    }
    let h = holder_of("discord", &[("a", &nodes[0]), ("b", &nodes[1])]);
    assert_eq!(fake.connections(), 1, "one gateway for the bot");
    let channel: u64 = 1_184_011_225_150_619_740;
    fake.add_message(
        channel,
        fake_discord::message(
            channel,
            5990,
            fake_discord::user(31, "old", false),
            "before metro",
        ),
    );
    let line = format!("metro://discord/{channel}");
    let other = &nodes[1 - h];
    let f = other
        .connect()
        .ok(json!({"op": "fetch", "line": line, "limit": 3}));
    let msgs = f["messages"].as_array().cloned().unwrap_or_default();
    assert!(
        msgs.iter().any(|m| m["messageId"] == "5990"),
        "fetched through node {}: {f}",
        ["a", "b"][h]
    );
    assert_eq!(fake.connections(), 1);
}
