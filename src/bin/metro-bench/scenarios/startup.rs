//! 5. Startup: exec → first answered `hello`, with an empty log and with a
//!    big log (1 GiB; written directly). RSS right after.

use std::time::Duration;

use crate::daemon::{Daemon, TempDir};
use crate::loggen::write_log;
use crate::report::Case;
use crate::{Ctx, Error};

pub async fn run(ctx: &Ctx) -> Result<Vec<Case>, Error> {
    let runs = ctx.pick(7, 2);
    let mut cases = Vec::new();

    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let mut d = Daemon::start(&ctx.spec("always"), "st0")?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        times.push(d.startup.as_secs_f64() * 1e3);
        rss.push(d.rss_kib()? as f64);
        d.stop();
    }
    cases.push(summary("empty_log".into(), &times, &rss, 0.0));

    let tmp = TempDir::new("st1")?;
    let state = tmp.path().join("state");
    let size = ctx.pick(1u64 << 30, 10 << 20);
    let (_, bytes) = write_log(&state, u64::MAX, size)?;
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let mut d = Daemon::start_in(&ctx.spec("always"), &state)?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        times.push(d.startup.as_secs_f64() * 1e3);
        rss.push(d.rss_kib()? as f64);
        d.stop();
    }
    cases.push(summary(
        format!("log_{}mib", size >> 20),
        &times,
        &rss,
        bytes as f64 / (1 << 20) as f64,
    ));
    Ok(cases)
}

fn summary(name: String, times: &[f64], rss: &[f64], log_mib: f64) -> Case {
    let mut t = times.to_vec();
    t.sort_by(|a, b| a.total_cmp(b));
    let mut r = rss.to_vec();
    r.sort_by(|a, b| a.total_cmp(b));
    let mut c = Case::new(name)
        .m("startup_ms_median", t[t.len() / 2])
        .m("startup_ms_min", t[0])
        .m("startup_ms_max", t[t.len() - 1])
        .m("rss_kib_median", r[r.len() / 2])
        .m("runs", t.len() as f64);
    if log_mib > 0.0 {
        c = c.m("log_mib", log_mib);
    }
    c
}
