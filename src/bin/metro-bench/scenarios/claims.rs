//! 7. Claims under load: delivery throughput of a publish stream to 4
//!    `mine-or-unclaimed` subscribers (the predicate reads the claims), with
//!    and without 10,000 claim/release pairs per second on other lines
//!    (durable claims: `claims.json` is rewritten per batch of changes).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{
    bytecount, calibrate, count_lines, find, plain_body, publish_all, subscribers, Conn, Limit,
};
use crate::daemon::Daemon;
use crate::report::Case;
use crate::{Ctx, Error};

const SUBSCRIBERS: usize = 4;
const PAIRS_PER_S: u64 = 10_000;

pub async fn run(ctx: &Ctx) -> Result<Vec<Case>, Error> {
    let events = ctx.pick(300_000u64, 2_000);
    // Rounds alternate without / with, so drift on a shared machine hits
    // both sides alike; the medians are reported.
    let rounds = ctx.pick(3, 1);
    let (mut base, mut with, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        base.push(measure(ctx, events, false).await?.0);
        let (w, p) = measure(ctx, events, true).await?;
        with.push(w);
        pairs.push(p);
    }
    let (base, with, pairs) = (median(base), median(with), median(pairs));
    Ok(vec![
        Case::new("without_claims").m("deliveries_per_s", base),
        Case::new("with_10k_claim_pairs_per_s")
            .m("deliveries_per_s", with)
            .m("claim_pairs_per_s", pairs)
            .m("ratio_with_to_without", with / base),
    ])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// (deliveries/s, claim pairs/s achieved)
async fn measure(ctx: &Ctx, events: u64, claims: bool) -> Result<(f64, f64), Error> {
    let d = Daemon::start(&ctx.spec("never"), "clm")?;
    let pad = calibrate(&d.socket).await?;
    let subs = subscribers(
        &d.socket,
        SUBSCRIBERS,
        &json!({"as": "metro://claude/bench/s{i}", "follow": true, "since": "tail"}),
    )
    .await?;
    let seen = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = subs
        .into_iter()
        .map(|c| tokio::spawn(count_lines(c, events, seen.clone())))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let claimer = if claims {
        let c = Conn::connect(&d.socket).await?;
        Some(tokio::spawn(claim_release(c, stop.clone())))
    } else {
        None
    };
    let limit = Limit {
        events,
        until: Instant::now() + Duration::from_secs(120),
    };
    let s = publish_all(&d.socket, 4, 64, limit, move |p, _, out| {
        plain_body(p, pad, out)
    })
    .await?;
    let mut last = s.last_answer;
    for r in readers {
        let t = tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .map_err(|_| "subscribers did not receive every event within 60 s")???;
        last = last.max(t);
    }
    stop.store(true, Ordering::Relaxed);
    let pairs = match claimer {
        Some(t) => t.await??,
        None => 0.0,
    };
    let secs = last.duration_since(s.first_sent).as_secs_f64();
    Ok(((SUBSCRIBERS as u64 * events) as f64 / secs, pairs))
}

/// Claims and releases `metro://telegram/<k>` (1,000 lines in turn) at
/// [`PAIRS_PER_S`], paced per millisecond, until `stop`; returns the pairs
/// per second answered.
async fn claim_release(c: Conn, stop: Arc<AtomicBool>) -> Result<f64, Error> {
    let Conn { mut rd, mut wr, .. } = c;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut answers = 0u64;
        loop {
            let k = rd.read(&mut buf).await?;
            if k == 0 {
                return Ok::<_, Error>(answers);
            }
            if let Some(i) = find(&buf[..k], b"\"ok\":false") {
                let end = k.min(i + 300);
                return Err(
                    format!("claim failed: {}", String::from_utf8_lossy(&buf[i..end])).into(),
                );
            }
            answers += bytecount(&buf[..k], b'\n');
        }
    });
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0u64;
    let mut out = Vec::with_capacity(64 << 10);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * PAIRS_PER_S as f64) as u64;
        out.clear();
        while sent < due {
            let line = format!("metro://telegram/{}", sent % 1000);
            out.extend_from_slice(
                format!(
                    "{{\"op\":\"claim\",\"req\":{},\"line\":\"{line}\",\"as\":\"metro://claude/bench/claimer\"}}\n{{\"op\":\"release\",\"req\":{},\"line\":\"{line}\"}}\n",
                    2 * sent,
                    2 * sent + 1
                )
                .as_bytes(),
            );
            sent += 1;
        }
        wr.write_all(&out).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    wr.shutdown().await?;
    let answers = reader.await??;
    if answers != 2 * sent {
        return Err(format!("{} claim/release requests, {answers} answers", 2 * sent).into());
    }
    Ok(sent as f64 / secs)
}
