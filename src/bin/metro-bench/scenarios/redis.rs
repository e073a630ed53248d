//! metro beside Redis (issue 17, `--redis`): the shapes of scenarios 1–3
//! run against metro and against a `redis-server` from PATH, driven by the
//! same client loops (the Redis side speaks RESP, see `resp.rs`), in
//! interleaved rounds (metro, Redis, metro, Redis, …); each metric is the
//! median over the rounds, with `ratio_<metric>` = metro / Redis.
//!
//! - `publish_PxW_fsync_F`: `XADD bench * line <line> text <text>` with the
//!   text of a 300-byte metro event; `always` = `--appendonly yes
//!   --appendfsync always`, `never` = `--appendonly no`.
//! - `fanout_16_subscribers`: one publisher with 256 in flight; each of 16
//!   subscribers loops `XREAD COUNT 1024 BLOCK 0 STREAMS bench <last id>`.
//! - `latency_R_per_s`: the paced, stamped publisher of scenario 3; the
//!   same 16 `XREAD BLOCK` readers record the stamp on receipt.
//!
//! Skipped, with a note, when there is no `redis-server` on PATH.

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{fanout, latency, publish};
use crate::client::{all_read, publish_all_wire, Conn, Limit};
use crate::report::{Case, Skipped};
use crate::resp::{self, Redis, RespAnswers, Xadd};
use crate::{clock_ns, Ctx, Error};

pub async fn run(ctx: &Ctx) -> Result<Vec<Case>, Error> {
    let Some(exe) = resp::find_server() else {
        return Err(Skipped(
            "no redis-server on PATH: the comparison with Redis was not run".into(),
        )
        .into());
    };
    let rounds = ctx.pick(3, 1);
    let secs = ctx.pick(3.0, 0.3);
    let mut cases = Vec::new();
    for fsync in ["always", "never"] {
        for (publishers, window) in publish::SHAPES {
            let name = format!("publish_{publishers}x{window}_fsync_{fsync}");
            if !ctx.wants(&name) {
                continue;
            }
            let (mut m, mut r) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let (s, pad) = publish::one(ctx, fsync, publishers, window, secs).await?;
                m.push(s.rate());
                let redis = Redis::start(&exe, fsync == "always", "rpub")?;
                let limit = Limit {
                    events: ctx.pick(u64::MAX, 2_000),
                    until: Instant::now() + Duration::from_secs_f64(secs),
                };
                let s = publish_all_wire(&redis.socket, publishers, window, limit, Xadd { pad })
                    .await?;
                r.push(s.rate());
            }
            cases.push(ratio(Case::new(name), "events_per_s", m, r));
        }
    }
    let subs = latency::SUBSCRIBERS;
    let name = format!("fanout_{subs}_subscribers");
    if ctx.wants(&name) {
        let events = ctx.pick(150_000, 2_000);
        let (mut m, mut r) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (_, secs, pad) = fanout::one(ctx, subs, events).await?;
            m.push((subs as u64 * events) as f64 / secs);
            let redis = Redis::start(&exe, false, "rfan")?;
            let secs = redis_fanout(&redis.socket, subs, events, pad).await?;
            r.push((subs as u64 * events) as f64 / secs);
        }
        cases.push(ratio(Case::new(name), "deliveries_per_s", m, r));
    }
    for rate in [1_000u64, 10_000] {
        let name = format!("latency_{rate}_per_s");
        if !ctx.wants(&name) {
            continue;
        }
        let secs = ctx.pick(3.0, 0.3);
        let (mut m50, mut r50, mut m99, mut r99) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let (h, _, xpad) = latency::one(ctx, rate, "never", secs).await?;
            m50.push(h.value_at_quantile(0.5) as f64 / 1000.0);
            m99.push(h.value_at_quantile(0.99) as f64 / 1000.0);
            let redis = Redis::start(&exe, false, "rlat")?;
            let h = redis_latency(&redis.socket, rate, secs, xpad).await?;
            r50.push(h.value_at_quantile(0.5) as f64 / 1000.0);
            r99.push(h.value_at_quantile(0.99) as f64 / 1000.0);
        }
        let c = ratio(Case::new(name), "p50_us", m50, r50);
        cases.push(ratio(c, "p99_us", m99, r99));
    }
    Ok(cases)
}

/// Adds `metro_<metric>`, `redis_<metric>` (medians) and their ratio.
fn ratio(c: Case, metric: &'static str, metro: Vec<f64>, redis: Vec<f64>) -> Case {
    let (m, r) = (median(metro), median(redis));
    let name = |prefix: &str| -> &'static str {
        // A handful of names per run: leaking them is the simplest way to
        // keep `Case`'s `&'static str` metric names.
        Box::leak(format!("{prefix}{metric}").into_boxed_str())
    };
    c.m(name("metro_"), m)
        .m(name("redis_"), r)
        .m(name("ratio_"), if r > 0.0 { m / r } else { 0.0 })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `n` readers each looping `XREAD BLOCK` from the start of the stream
/// until `events` entries came; `entry(text)` per entry. Returns when the
/// last entry arrived.
async fn xread_loop(
    conn: Conn,
    events: u64,
    mut entry: impl FnMut(&[u8]) -> Result<(), Error> + Send,
) -> Result<Instant, Error> {
    let Conn { mut rd, mut wr, .. } = conn;
    let mut after = b"0-0".to_vec();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut req = Vec::with_capacity(128);
    let mut got = 0u64;
    let mut failed = None;
    while got < events {
        req.clear();
        resp::xread(&mut req, &after);
        wr.write_all(&req).await?;
        loop {
            let used = resp::xread_reply(&buf, |id, text| {
                got += 1;
                after.clear();
                after.extend_from_slice(id);
                if let Err(e) = entry(text) {
                    failed.get_or_insert(e);
                }
            })?;
            if let Some(e) = failed.take() {
                return Err(e);
            }
            if let Some(used) = used {
                buf.drain(..used);
                break;
            }
            if rd.read_buf(&mut buf).await? == 0 {
                return Err(format!("redis closed the reader after {got} of {events}").into());
            }
        }
    }
    Ok(Instant::now())
}

/// Seconds from the first `XADD` to the last entry read by the last of
/// `n` readers.
async fn redis_fanout(socket: &Path, n: usize, events: u64, pad: usize) -> Result<f64, Error> {
    let mut rs = Vec::with_capacity(n);
    for _ in 0..n {
        let c = Conn::connect(socket).await?;
        rs.push(tokio::spawn(xread_loop(c, events, |_| Ok(()))));
    }
    let limit = Limit {
        events,
        until: Instant::now() + Duration::from_secs(120),
    };
    let s = publish_all_wire(socket, 1, 256, limit, Xadd { pad }).await?;
    let last = all_read(rs, s.last_answer).await?;
    Ok(last.duration_since(s.first_sent).as_secs_f64())
}

/// The latency of every delivery (ns) to [`latency::SUBSCRIBERS`] readers
/// at `rate` events/s for `secs`.
async fn redis_latency(
    socket: &Path,
    rate: u64,
    secs: f64,
    xpad: usize,
) -> Result<Histogram<u64>, Error> {
    let n = ((rate as f64 * secs) as u64).max(10);
    let mut rs = Vec::with_capacity(latency::SUBSCRIBERS);
    for _ in 0..latency::SUBSCRIBERS {
        let c = Conn::connect(socket).await?;
        rs.push(tokio::spawn(stamp_reader(c, n)));
    }
    let socket = socket.to_path_buf();
    let publisher = tokio::task::spawn_blocking(move || {
        latency::paced(&socket, rate, n, RespAnswers::default(), |_, out| {
            resp::xadd(out, latency::LINE.as_bytes(), latency::STAMP + xpad, |o| {
                latency::stamped_text(o, xpad)
            })
        })
    });
    publisher.await??;
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for r in rs {
        let h = tokio::time::timeout(Duration::from_secs(30), r)
            .await
            .map_err(|_| "Redis readers did not receive every entry within 30 s")???;
        all.add(&h)?;
    }
    Ok(all)
}

/// One reader of [`redis_latency`]: the stamp of each entry's text against
/// the clock on receipt.
async fn stamp_reader(c: Conn, n: u64) -> Result<Histogram<u64>, Error> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    xread_loop(c, n, |text| {
        let now = clock_ns();
        let sent: u64 = text
            .get(1..21)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| format!("no stamp in {}", String::from_utf8_lossy(text)))?;
        h.record(now.saturating_sub(sent).max(1))?;
        Ok(())
    })
    .await?;
    Ok(h)
}
