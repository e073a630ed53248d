//! Results: a table for people, JSON for programs.

use serde_json::{json, Map, Value};

/// One measured case of a scenario: named metrics (the unit is in the
/// name: `_per_s`, `_ms`, `_us`, `_kib`, `_mb_per_s`, …).
pub struct Case {
    pub name: String,
    pub metrics: Vec<(&'static str, f64)>,
}

impl Case {
    pub fn new(name: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            metrics: Vec::new(),
        }
    }

    pub fn m(mut self, metric: &'static str, value: f64) -> Case {
        self.metrics.push((metric, value));
        self
    }
}

/// A scenario that could not run here, and why (not a failure).
#[derive(Debug)]
pub struct Skipped(pub String);

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skipped {}

pub struct Scenario {
    pub name: &'static str,
    pub cases: Vec<Case>,
    /// Set when the scenario failed or timed out.
    pub error: Option<String>,
    /// Set when the scenario was skipped ([`Skipped`]).
    pub skipped: Option<String>,
    /// Share of the machine's CPU time (all cores = 100) used during the
    /// scenario by processes other than the bench and its daemons: how
    /// disturbed the numbers may be on a shared machine.
    pub other_cpu_pct: f64,
}

/// CPU clock ticks: the machine's (from /proc/stat) and this process's
/// own plus its reaped children's (the daemons, once stopped).
pub struct CpuTicks {
    busy: u64,
    total: u64,
    own: u64,
}

impl CpuTicks {
    pub fn now() -> CpuTicks {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
        let total = busy + at(3) + at(4);
        let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the `(comm)`: state is field 3, utime..cstime 14..17.
        let rest: Vec<u64> = me
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or_default()
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        CpuTicks {
            busy,
            total,
            own: rest.iter().sum(),
        }
    }

    pub fn other_pct_since(&self, earlier: &CpuTicks) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1);
        let busy = self.busy.saturating_sub(earlier.busy);
        let own = self.own.saturating_sub(earlier.own);
        busy.saturating_sub(own) as f64 * 100.0 / total as f64
    }
}

pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpuModel": model,
        "memMiB": mem_kib / 1024,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

pub fn to_json(smoke: bool, scenarios: &[Scenario]) -> Value {
    let mut s = Map::new();
    for sc in scenarios {
        let mut cases = Map::new();
        for c in &sc.cases {
            let mut m = Map::new();
            for (k, v) in &c.metrics {
                m.insert((*k).to_string(), json!(round(*v)));
            }
            cases.insert(c.name.clone(), Value::Object(m));
        }
        let mut entry = json!({ "cases": cases, "otherCpuPct": round(sc.other_cpu_pct) });
        if let Some(e) = &sc.error {
            entry["error"] = json!(e);
        }
        if let Some(why) = &sc.skipped {
            entry["skipped"] = json!(why);
        }
        s.insert(sc.name.to_string(), entry);
    }
    json!({ "smoke": smoke, "machine": machine(), "scenarios": s })
}

fn round(v: f64) -> f64 {
    if v.abs() >= 100.0 {
        v.round()
    } else {
        (v * 1000.0).round() / 1000.0
    }
}

pub fn fmt_num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v);
        let neg = s.starts_with('-');
        let digits: Vec<char> = s.trim_start_matches('-').chars().collect();
        let mut out = String::new();
        for (i, c) in digits.iter().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(*c);
        }
        if neg {
            format!("-{out}")
        } else {
            out
        }
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

pub fn table(scenarios: &[Scenario]) -> String {
    let mut rows: Vec<[String; 3]> = Vec::new();
    for sc in scenarios {
        if let Some(e) = &sc.error {
            rows.push([sc.name.into(), "FAILED".into(), e.clone()]);
        }
        if let Some(why) = &sc.skipped {
            rows.push([sc.name.into(), "SKIPPED".into(), why.clone()]);
        }
        for c in &sc.cases {
            let ms: Vec<String> = c
                .metrics
                .iter()
                .map(|(k, v)| format!("{k} {}", fmt_num(*v)))
                .collect();
            rows.push([sc.name.into(), c.name.clone(), ms.join(", ")]);
        }
    }
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0).max(8);
    let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0).max(4);
    let mut out = format!("{:w0$}  {:w1$}  results\n", "scenario", "case");
    for r in rows {
        out.push_str(&format!("{:w0$}  {:w1$}  {}\n", r[0], r[1], r[2]));
    }
    let others: Vec<String> = scenarios
        .iter()
        .map(|s| format!("{} {:.0}%", s.name, s.other_cpu_pct))
        .collect();
    out.push_str(&format!(
        "CPU used by other processes meanwhile (100% = every core): {}\n",
        others.join(", ")
    ));
    out
}
