//! 3. Latency publish → subscriber receipt at a fixed rate (1,000 and
//!    10,000 events/s) with 16 subscribers. The publisher stamps each event
//!    with the bench's monotonic clock right before writing it; each
//!    subscriber reads the stamp back on receipt. hdrhistogram, ns.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::client::{calibrate, find, subscribers, Answers, Conn, JsonLines};
use crate::daemon::Daemon;
use crate::report::Case;
use crate::{clock_ns, Ctx, Error};

pub(super) const SUBSCRIBERS: usize = 16;
/// `t` + 20 digits at the start of the text.
pub(super) const STAMP: usize = 21;
/// The line the events go to.
pub(super) const LINE: &str = "metro://claude/bench/p00";

pub async fn run(ctx: &Ctx) -> Result<Vec<Case>, Error> {
    let mut cases = Vec::new();
    for (rate, fsync) in [(1_000u64, "never"), (10_000, "never"), (10_000, "always")] {
        let name = format!("{rate}_per_s_fsync_{fsync}");
        if !ctx.wants(&name) {
            continue;
        }
        let (all, achieved, _) = one(ctx, rate, fsync, ctx.pick(5.0, 0.3)).await?;
        cases.push(case(name, &all, achieved));
    }
    Ok(cases)
}

/// A latency case: the quantiles of `all` (ns) in µs, the rate achieved.
pub(super) fn case(name: impl Into<String>, all: &Histogram<u64>, achieved: f64) -> Case {
    let us = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    Case::new(name)
        .m("p50_us", us(0.5))
        .m("p99_us", us(0.99))
        .m("p999_us", us(0.999))
        .m("max_us", all.max() as f64 / 1000.0)
        .m("achieved_events_per_s", achieved)
        .m("samples", all.len() as f64)
}

/// One metro run: [`SUBSCRIBERS`] subscribers, `rate` events/s for `secs`;
/// every delivery's latency (ns), the rate achieved and the padding after
/// the stamp (for the same payload elsewhere).
pub(super) async fn one(
    ctx: &Ctx,
    rate: u64,
    fsync: &str,
    secs: f64,
) -> Result<(Histogram<u64>, f64, usize), Error> {
    let n = ((rate as f64 * secs) as u64).max(10);
    let d = Daemon::start(&ctx.spec(fsync), "lat")?;
    let xpad = calibrate(&d.socket).await?.saturating_sub(STAMP);
    let (all, achieved) = paced_run(&d.socket, &d.socket, SUBSCRIBERS, rate, n, xpad, 30).await?;
    Ok((all, achieved, xpad))
}

/// `subs` follow subscribers on `sub_socket`, then `n` stamped events at
/// `rate`/s published on `pub_socket`: every delivery's latency (ns) and
/// the rate achieved. Each subscriber has `wait_secs` after the last send.
pub(super) async fn paced_run(
    sub_socket: &std::path::Path,
    pub_socket: &std::path::Path,
    subs: usize,
    rate: u64,
    n: u64,
    xpad: usize,
    wait_secs: u64,
) -> Result<(Histogram<u64>, f64), Error> {
    let conns = subscribers(
        sub_socket,
        subs,
        &json!({"mode": "all", "follow": true, "since": "tail"}),
    )
    .await?;
    let receivers: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(receive(c, n, xpad)))
        .collect();
    let socket = pub_socket.to_path_buf();
    let publisher =
        tokio::task::spawn_blocking(move || paced_publisher(&socket, LINE, rate, n, xpad));
    let sent_secs = publisher.await??;
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for r in receivers {
        let h = tokio::time::timeout(Duration::from_secs(wait_secs), r)
            .await
            .map_err(|_| {
                format!("subscribers did not receive every event within {wait_secs} s")
            })???;
        all.add(&h)?;
    }
    Ok((all, n as f64 / sent_secs))
}

/// One subscriber: `n` event frames, each latency recorded.
pub(super) async fn receive(c: Conn, n: u64, xpad: usize) -> Result<Histogram<u64>, Error> {
    let Conn {
        mut rd, wr: _wr, ..
    } = c;
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut line = Vec::with_capacity(1024);
    for _ in 0..n {
        line.clear();
        if rd.read_until(b'\n', &mut line).await? == 0 {
            return Err("subscriber connection closed".into());
        }
        let now = clock_ns();
        let sent = stamp(&line, xpad)
            .ok_or_else(|| format!("no stamp in frame {}", String::from_utf8_lossy(&line)))?;
        h.record(now.saturating_sub(sent).max(1))?;
    }
    Ok(h)
}

/// The stamp: `…"text":"t<20 digits><xpad × x>"}}\n`.
pub(super) fn stamp(line: &[u8], xpad: usize) -> Option<u64> {
    let at = line
        .len()
        .checked_sub(4 + xpad + 20)
        .filter(|&i| i >= 2 && &line[i - 2..i] == b"\"t")
        .or_else(|| find(line, b"\"text\":\"t").map(|i| i + 9))?;
    std::str::from_utf8(line.get(at..at + 20)?)
        .ok()?
        .parse()
        .ok()
}

/// Publishes `n` events on `line` at `rate`/s on a blocking socket (its own
/// thread, sleeping between sends); a second thread drains the answers.
/// Each text is `t` + the 20-digit send time (ns) + `xpad` × `x`. Returns
/// the seconds the sends took.
pub(super) fn paced_publisher(
    socket: &std::path::Path,
    line: &str,
    rate: u64,
    n: u64,
    xpad: usize,
) -> Result<f64, Error> {
    paced(socket, rate, n, JsonLines, |i, out| {
        out.extend_from_slice(b"{\"op\":\"publish\",\"req\":");
        out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
        out.extend_from_slice(b",\"event\":{\"line\":\"");
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\",\"text\":\"");
        stamped_text(out, xpad);
        out.extend_from_slice(b"\"}}\n");
    })
}

/// `t` + the 20-digit time (ns, [`clock_ns`]) + `xpad` × `x`: written just
/// before the request goes out.
pub(super) fn stamped_text(out: &mut Vec<u8>, xpad: usize) {
    out.push(b't');
    out.extend_from_slice(format!("{:020}", clock_ns()).as_bytes());
    out.resize(out.len() + xpad, b'x');
}

/// The pacing loop of [`paced_publisher`] for any wire: `request(i, out)`
/// appends the `i`-th request, `answers` counts what comes back.
pub(super) fn paced<A: Answers>(
    socket: &std::path::Path,
    rate: u64,
    n: u64,
    mut answers: A,
    mut request: impl FnMut(u64, &mut Vec<u8>),
) -> Result<f64, Error> {
    let s = std::os::unix::net::UnixStream::connect(socket)?;
    let mut r = s.try_clone()?;
    let drain = std::thread::spawn(move || -> Result<u64, Error> {
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0;
        loop {
            let k = r.read(&mut buf)?;
            if k == 0 {
                return Ok(got);
            }
            got += answers.count(&buf[..k])?;
        }
    });
    let mut w = &s;
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let mut out = Vec::with_capacity(512);
    for i in 0..n {
        let due = start + period * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        out.clear();
        request(i, &mut out);
        w.write_all(&out)?;
    }
    let secs = start.elapsed().as_secs_f64();
    s.shutdown(std::net::Shutdown::Write)?;
    let got = drain.join().map_err(|_| "answer thread panicked")??;
    if got != n {
        return Err(format!("{n} publishes, {got} answers").into());
    }
    Ok(secs)
}
