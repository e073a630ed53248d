//! An agent that is not Rust: tests/clients/agent.py speaks the protocol
//! with Python's standard library only.

mod common;

use std::process::Command;

use common::*;

#[test]
fn a_python_agent_speaks_the_protocol_directly() {
    let d = Daemon::start();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/agent.py"
        ))
        .env("METRO_SOCKET", &d.socket)
        .output()
        .expect("python3 is needed for this test (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "agent.py: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
