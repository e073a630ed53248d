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
    let out = Command::new(env!("CARGO_BIN_EXE_metro-bench"))
        .args(["--smoke", "--json"])
        // The debug metrod (and metroctl, for `bridge`) built next to it by
        // `cargo test`.
        .args(["--metrod", env!("CARGO_BIN_EXE_metrod")])
        .output()
        .expect("run metro-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "metro-bench failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("metro-bench --json printed no JSON ({e}): {stderr}"));
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
