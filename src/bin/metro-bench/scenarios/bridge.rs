//! 8. `metroctl mcp`, the Claude Code bridge: an event published at a fixed
//!    rate (100 and 1,000 events/s) → its `notifications/claude/channel`
//!    line on the bridge's stdout, p50/p99 (the bench's monotonic clock
//!    stamped into the text, read back from `content`), and the bridge's
//!    RSS at the end. The bridge is the `metroctl` next to metrod.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use hdrhistogram::Histogram;

use super::latency::paced_publisher;
use crate::client::find;
use crate::daemon::{rss_kib, Daemon};
use crate::report::Case;
use crate::{clock_ns, Ctx, Error};

/// A chat line, so a personal (mine-or-unclaimed) subscription gets it.
const LINE: &str = "metro://telegram/4242";
const IDENTITY: &str = "metro://claude/bench/bridge";

pub async fn run(ctx: &Ctx) -> Result<Vec<Case>, Error> {
    let mut cases = Vec::new();
    let metroctl = ctx.metrod.with_file_name("metroctl");
    if !metroctl.is_file() {
        return Err(format!("no metroctl at {}", metroctl.display()).into());
    }
    for rate in [100u64, 1_000] {
        let name = format!("{rate}_per_s");
        if !ctx.wants(&name) {
            continue;
        }
        let secs = ctx.pick(5.0, 0.3);
        let n = ((rate as f64 * secs) as u64).max(10);
        let d = Daemon::start(&ctx.spec("never"), "bridge")?;
        let socket = d.socket.clone();
        let ctl = metroctl.clone();
        let m = tokio::task::spawn_blocking(move || measure(&ctl, &socket, rate, n)).await??;
        let us = |q: f64| m.hist.value_at_quantile(q) as f64 / 1000.0;
        cases.push(
            Case::new(name)
                .m("p50_us", us(0.5))
                .m("p99_us", us(0.99))
                .m("max_us", m.hist.max() as f64 / 1000.0)
                .m("achieved_events_per_s", n as f64 / m.sent_secs)
                .m("bridge_rss_mib", m.rss_kib as f64 / 1024.0)
                .m("samples", m.hist.len() as f64),
        );
    }
    Ok(cases)
}

struct Measured {
    hist: Histogram<u64>,
    sent_secs: f64,
    rss_kib: u64,
}

/// Kills the bridge however the measurement ends.
struct Bridge(Child);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn measure(metroctl: &PathBuf, socket: &Path, rate: u64, n: u64) -> Result<Measured, Error> {
    let mut bridge = Bridge(
        Command::new(metroctl)
            .arg("--socket")
            .arg(socket)
            .args(["mcp", "--as", IDENTITY, "--chat", LINE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", metroctl.display()))?,
    );
    let mut stdin = bridge.0.stdin.take().ok_or("no stdin")?;
    let mut stdout = BufReader::new(bridge.0.stdout.take().ok_or("no stdout")?);
    stdin.write_all(
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"metro-bench\",\"version\":\"1\"}}}\n",
    )?;
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if stdout.read_until(b'\n', &mut line)? == 0 {
            return Err("the bridge closed stdout before answering initialize".into());
        }
        if find(&line, b"\"id\":1").is_some() {
            break;
        }
    }
    stdin.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")?;
    // One event through first: the subscription is live and caught up.
    paced_publisher(socket, LINE, rate, 1, 0)?;
    wait_stamped(&mut stdout, &mut line)?;
    let reader = std::thread::spawn(move || -> Result<Histogram<u64>, Error> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        let mut line = Vec::with_capacity(1024);
        for _ in 0..n {
            let sent = wait_stamped(&mut stdout, &mut line)?;
            h.record(clock_ns().saturating_sub(sent).max(1))?;
        }
        Ok(h)
    });
    let sent_secs = paced_publisher(socket, LINE, rate, n, 0)?;
    let hist = reader.join().map_err(|_| "bridge reader panicked")??;
    let rss_kib = rss_kib(bridge.0.id())?;
    Ok(Measured {
        hist,
        sent_secs,
        rss_kib,
    })
}

/// Reads stdout up to the next channel notification; returns its stamp.
fn wait_stamped(stdout: &mut impl BufRead, line: &mut Vec<u8>) -> Result<u64, Error> {
    loop {
        line.clear();
        if stdout.read_until(b'\n', line)? == 0 {
            return Err("the bridge closed stdout".into());
        }
        let Some(at) = find(line, b"\"content\":\"t").map(|i| i + 12) else {
            continue;
        };
        return std::str::from_utf8(line.get(at..at + 20).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no stamp in {}", String::from_utf8_lossy(line)).into());
    }
}
