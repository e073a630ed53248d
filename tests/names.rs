//! Hardening (issue 14, item 4): a name that would map to no file (empty,
//! `.`, `..`) is refused with `bad_request` and leaves nothing behind.

mod common;

use common::*;
use serde_json::json;

#[test]
fn cursor_names_that_map_to_no_file_are_refused() {
    let d = Daemon::start();
    let mut c = d.connect();
    publish(&mut c, json!({"line": "telegram/1", "text": "x"}));
    let e = c.err(
        json!({"op": "subscribe", "since": "start", "cursor": "metro://", "as": "metro://claude/user/a"}),
        "bad_request",
    );
    assert!(e["message"].as_str().unwrap().contains("cursor"), "{e}");
    c.err(json!({"op": "cursor", "cursor": "metro://"}), "bad_request");
    // A name with text still works, and nothing odd was left in cursors/.
    let s = c.subscribe(json!({"since": "start", "cursor": "metro://ok", "as": "metro://claude/user/a", "mode": "all"}));
    c.drain(&s);
    let stats = c.ok(json!({"op": "stats"}));
    assert!(
        stats["cursors"]
            .as_array()
            .is_none_or(|a| a.iter().all(|x| x["name"] != "")),
        "{stats}"
    );
    if let Ok(dir) = std::fs::read_dir(d.dir.join("cursors")) {
        for e in dir {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name != "..tmp" && name != ".tmp" && !name.is_empty(),
                "{name}"
            );
        }
    }
    check_schema(&c, &d);
}
