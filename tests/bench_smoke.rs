//! The benchmark program still runs: `metro-bench --smoke --json` exits 0
//! and reports every scenario with positive numbers. No timing thresholds:
//! the numbers themselves belong in docs/benchmarks.md, not in a test.

use std::process::Command;

use serde_json::Value;

const SCENARIOS: [&str; 9] = [
    "publish", "fanout", "latency", "replay", "startup", "memory", "claims", "bridge", "cluster",
];

#[test]
fn smoke_run_reports_every_scenario() {
    let v = smoke_json(&[]);
    assert_eq!(v["smoke"], Value::Bool(true));
    assert!(v["machine"]["cpus"].as_u64().is_some_and(|n| n > 0), "{v}");
    let scenarios = v["scenarios"].as_object().expect("scenarios object");
    for name in SCENARIOS {
        let s = &scenarios
            .get(name)
            .unwrap_or_else(|| panic!("scenario {name} missing: {v}"));
        assert!(s.get("error").is_none(), "{name} failed: {s}");
        let cases = s["cases"].as_object().expect("cases object");
        assert!(!cases.is_empty(), "{name} has no cases");
        for (case, metrics) in cases {
            let metrics = metrics.as_object().expect("metrics object");
            assert!(!metrics.is_empty(), "{name}/{case} has no metrics");
            for (metric, value) in metrics {
                let x = value
                    .as_f64()
                    .unwrap_or_else(|| panic!("{name}/{case}/{metric} is not a number"));
                assert!(x.is_finite(), "{name}/{case}/{metric} = {x}");
                // A difference of two RSS readings can be noise-small.
                if metric != "per_subscriber_bytes" {
                    assert!(x > 0.0, "{name}/{case}/{metric} = {x}");
                }
            }
        }
    }
    assert_eq!(scenarios.len(), SCENARIOS.len(), "unexpected scenarios");
}

/// `metro-bench --smoke --json --redis` measures metro beside a real
/// `redis-server` and reports both and their ratio for every shape. Runs
/// only where `redis-server` is on PATH (`.ci/run` does not install it).
#[test]
fn redis_comparison_reports_metro_redis_and_ratio() {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("redis-server").is_file()));
    if !on_path {
        eprintln!("SKIPPED: no redis-server on PATH, the Redis comparison was not tested");
        return;
    }
    let v = smoke_json(&["--redis"]);
    let scenarios = v["scenarios"].as_object().expect("scenarios object");
    assert_eq!(scenarios.len(), 1, "only the comparison runs: {v}");
    let s = &scenarios["redis"];
    assert!(
        s.get("error").is_none() && s.get("skipped").is_none(),
        "{s}"
    );
    let cases = s["cases"].as_object().expect("cases object");
    let mut names: Vec<&str> = cases.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "fanout_16_subscribers",
            "latency_10000_per_s",
            "latency_1000_per_s",
            "publish_16x64_fsync_always",
            "publish_16x64_fsync_never",
            "publish_1x1_fsync_always",
            "publish_1x1_fsync_never",
            "publish_50x1_fsync_always",
            "publish_50x1_fsync_never",
        ]
    );
    for (case, metrics) in cases {
        let metrics = metrics.as_object().expect("metrics object");
        for side in ["metro_", "redis_", "ratio_"] {
            let mut of_side = metrics.iter().filter(|(k, _)| k.starts_with(side));
            let (k, x) = of_side
                .next()
                .unwrap_or_else(|| panic!("{case} has no {side}* metric: {metrics:?}"));
            let x = x.as_f64().unwrap_or(-1.0);
            assert!(x.is_finite() && x > 0.0, "{case}/{k} = {x}");
        }
        // Each ratio is metro's figure over Redis's.
        for (k, r) in metrics.iter().filter(|(k, _)| k.starts_with("ratio_")) {
            let metric = &k["ratio_".len()..];
            let m = metrics[&format!("metro_{metric}")].as_f64().unwrap();
            let rd = metrics[&format!("redis_{metric}")].as_f64().unwrap();
            let r = r.as_f64().unwrap();
            assert!(
                (r - m / rd).abs() <= 0.01 * r.max(1.0),
                "{case}/{k}: {r} vs {m}/{rd}"
            );
        }
    }
}

/// `metro-bench --smoke --json` plus `extra`, run against the debug metrod
/// (and metroctl, for `bridge`) built next to it by `cargo test`: its JSON,
/// once it exited 0.
fn smoke_json(extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_metro-bench"))
        .args(["--smoke", "--json"])
        .args(extra)
        .args(["--metrod", env!("CARGO_BIN_EXE_metrod")])
        .output()
        .expect("run metro-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "metro-bench failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("metro-bench --json printed no JSON ({e}): {stderr}"))
}
