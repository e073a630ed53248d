//! 7. Claims under load: delivery throughput of a publish stream to 4
//!    `mine-or-unclaimed` subscribers (the predicate reads the claims), with
//!    and without 10,000 claim/release pairs per second on other lines
//!    (durable claims held ~100 ms each, so `claims.json` is rewritten for
//!    every batch of changes).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{
    all_read, bytecount, calibrate, count_lines, find, publish_all, subscribers, Conn, Limit,
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
    let (want_base, want_with) = (ctx.wants(WITHOUT), ctx.wants(WITH));
    let (mut base, mut with, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        if want_base {
            base.push(measure(ctx, events, false).await?.0);
        }
        if want_with {
            let (w, p) = measure(ctx, events, true).await?;
            with.push(w);
            pairs.push(p);
        }
    }
    let mut cases = Vec::new();
    if want_base {
        cases.push(Case::new(WITHOUT).m("deliveries_per_s", median(&base)));
    }
    if want_with {
        let mut c = Case::new(WITH)
            .m("deliveries_per_s", median(&with))
            .m("claim_pairs_per_s", median(&pairs));
        if want_base {
            c = c.m("ratio_with_to_without", median(&with) / median(&base));
        }
        cases.push(c);
    }
    Ok(cases)
}

const WITHOUT: &str = "without_claims";
const WITH: &str = "with_10k_claim_pairs_per_s";

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A plain event on the chat line `metro://telegram/50NN`, never claimed
/// here: the predicate looks its owner up in the claims (a local line, such
/// as the other scenarios' `metro://claude/bench/pNN`, belongs to the
/// identity it names and would reach none of the subscribers). About the
/// size of [`crate::client::plain_body`]'s events.
fn chat_body(publisher: usize, pad: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"line\":\"metro://telegram/50");
    out.extend_from_slice(format!("{:02}", publisher % 100).as_bytes());
    out.extend_from_slice(b"\",\"text\":\"");
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"\"}");
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
        chat_body(p, pad, out)
    })
    .await?;
    let last = all_read(readers, s.last_answer).await?;
    stop.store(true, Ordering::Relaxed);
    let pairs = match claimer {
        Some(t) => t.await??,
        None => 0.0,
    };
    let secs = last.duration_since(s.first_sent).as_secs_f64();
    Ok(((SUBSCRIBERS as u64 * events) as f64 / secs, pairs))
}

/// Claims and releases at [`PAIRS_PER_S`] pairs per second, paced per
/// millisecond, until `stop`; returns the pairs per second answered. Pair
/// k claims `metro://telegram/<k mod 2000>` and releases the line claimed
/// 1,000 pairs (100 ms) earlier, so about 1,000 claims are held and every
/// batch of claim changes alters the durable map (a claim released in the
/// same batch would leave `claims.json` unwritten).
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
            let line = format!("metro://telegram/{}", sent % 2000);
            let old = format!("metro://telegram/{}", (sent + 1000) % 2000);
            out.extend_from_slice(
                format!(
                    "{{\"op\":\"claim\",\"req\":{},\"line\":\"{line}\",\"as\":\"metro://claude/bench/claimer\"}}\n{{\"op\":\"release\",\"req\":{},\"line\":\"{old}\"}}\n",
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
