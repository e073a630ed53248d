//! 9. Clusters (issue 18): a nats-server with JetStream (Debian's
//!    `nats-server`, started here on a free port and a temp store dir) and
//!    metrod nodes joined through it.
//!    - `cross_node_1000_per_s`: events published on node a at 1,000/s,
//!      received by a follow subscriber on node b; latency publish → receipt
//!      (hdrhistogram, ns; the stamp is the same as in `latency`).
//!    - `publish_cluster_on_vs_off`: local publish throughput of one
//!      connection sending as fast as it can, on a node in a cluster and on
//!      a plain metrod (target: on ≥ 0.8 × off).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::latency::{case, paced_publisher, paced_run, STAMP};
use crate::client::{calibrate, Conn};
use crate::daemon::{Daemon, TempDir};
use crate::report::Case;
use crate::{Ctx, Error};

const LINE: &str = "metro://claude/bench/c00";

/// nats-server, killed on drop.
struct Nats {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl Nats {
    fn start() -> Result<Nats, Error> {
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nats-server");
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = TempDir::new("nats")?;
        let store: PathBuf = dir.path().join("js");
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run nats-server ({e}): apt install nats-server"))?;
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err("nats-server did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        })
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(ctx: &Ctx, nats: &Nats, name: &str) -> Result<Daemon, Error> {
    let mut spec = ctx.spec("never");
    spec.args = vec![
        "--cluster".into(),
        nats.url.clone(),
        "--cluster-node".into(),
        name.into(),
        "--webhook-addr".into(),
        "off".into(),
    ];
    Daemon::start(&spec, &format!("cl-{name}"))
}

/// Waits until the node has joined (stream and bucket ready, connected).
async fn joined(d: &Daemon) -> Result<(), Error> {
    let t0 = Instant::now();
    let mut c = Conn::connect(&d.socket).await?;
    loop {
        let s = c.request(json!({"op": "stats"})).await?;
        if s["cluster"]["ready"] == json!(true) && s["cluster"]["connection"] == json!("connected")
        {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(format!("node did not join within 30 s: {}", s["cluster"]).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `d` has appended `n` events of other nodes.
async fn received(d: &Daemon, n: u64) -> Result<(), Error> {
    let t0 = Instant::now();
    let mut c = Conn::connect(&d.socket).await?;
    loop {
        let s = c.request(json!({"op": "stats"})).await?;
        if s["cluster"]["received"].as_u64().unwrap_or(0) >= n {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(format!("node did not receive {n} events within 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(ctx: &Ctx) -> Result<Vec<Case>, Error> {
    let mut cases = Vec::new();
    let nats = Nats::start()?;
    if ctx.wants("cross_node_1000_per_s") {
        let a = node(ctx, &nats, "a")?;
        let b = node(ctx, &nats, "b")?;
        joined(&a).await?;
        joined(&b).await?;
        let rate = 1_000u64;
        let n = ((rate as f64 * ctx.pick(5.0, 0.3)) as u64).max(10);
        let xpad = calibrate(&a.socket).await?.saturating_sub(STAMP);
        // The calibration event reaches b first, before b's subscriber.
        received(&b, 1).await?;
        let (all, achieved) = paced_run(&b.socket, &a.socket, 1, rate, n, xpad, 60).await?;
        cases.push(case("cross_node_1000_per_s", &all, achieved));
    }
    if ctx.wants("publish_cluster_on_vs_off") {
        let n = ctx.pick(50_000u64, 500);
        let throughput = |socket: PathBuf| {
            tokio::task::spawn_blocking(move || -> Result<f64, Error> {
                let t0 = Instant::now();
                // A rate no machine reaches: as fast as the answers come.
                paced_publisher(&socket, LINE, 1_000_000_000, n, 0)?;
                Ok(n as f64 / t0.elapsed().as_secs_f64())
            })
        };
        let off = {
            let d = Daemon::start(&ctx.spec("never"), "cl-off")?;
            throughput(d.socket.clone()).await??
        };
        let on = {
            let a = node(ctx, &nats, "on-a")?;
            let b = node(ctx, &nats, "on-b")?;
            joined(&a).await?;
            joined(&b).await?;
            throughput(a.socket.clone()).await??
        };
        cases.push(
            Case::new("publish_cluster_on_vs_off")
                .m("off_events_per_s", off)
                .m("on_events_per_s", on)
                .m("on_over_off", on / off),
        );
    }
    Ok(cases)
}
