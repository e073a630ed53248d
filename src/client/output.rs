//! How `metroctl` prints: JSON lines when stdout is not a terminal (or with
//! `--json`), aligned human rows and sentences on a terminal.
//! `METRO_OUTPUT=human` (or `json`) decides instead of the terminal check,
//! for scripts that want the sentences and for tests.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

/// `--json` given before or after any subcommand (the global flag).
static FORCE_JSON: AtomicBool = AtomicBool::new(false);

/// Makes every command print JSON (the global `--json`).
pub fn force_json() {
    FORCE_JSON.store(true, Ordering::Relaxed);
}

/// True when output is JSON: `flag` (a command's own `--json`), the global
/// `--json`, `METRO_OUTPUT=json`, or stdout not a terminal unless
/// `METRO_OUTPUT=human`.
pub fn json_mode(flag: bool) -> bool {
    if flag || FORCE_JSON.load(Ordering::Relaxed) {
        return true;
    }
    match std::env::var("METRO_OUTPUT").as_deref() {
        Ok("json") => true,
        Ok("human") => false,
        _ => !std::io::stdout().is_terminal(),
    }
}

/// True only with `--json` (commands whose piped output stays text: the
/// paths of `download`, the steps of `setup` and `service install`).
pub fn json_forced() -> bool {
    FORCE_JSON.load(Ordering::Relaxed)
}

/// What a command that takes steps on this machine (`setup`, `service
/// install`, `tunnel setup`, …) reports: its sentences as they happen, or
/// with `--json` one JSON object of its fields at the end.
#[derive(Default)]
pub struct Report {
    fields: serde_json::Map<String, Value>,
}

impl Report {
    /// A sentence for people (not in the JSON).
    pub fn say(&self, line: impl std::fmt::Display) {
        if !json_forced() {
            println!("{line}");
        }
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.fields.insert(key.to_string(), value.into());
    }

    /// Appends to the array `key`.
    pub fn push(&mut self, key: &str, value: impl Into<Value>) {
        let slot = self
            .fields
            .entry(key.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = slot {
            a.push(value.into());
        }
    }

    /// With `--json`, prints the fields.
    pub fn finish(self) {
        if json_forced() {
            println!("{}", Value::Object(self.fields));
        }
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn short(uri: &str) -> &str {
    uri.strip_prefix(crate::line::SCHEME).unwrap_or(uri)
}

fn clip(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c == '\n' { '⏎' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// One event as a human row: time, kind, line, sender, text.
pub fn event_row(ev: &Value) -> String {
    let ts = s(ev, "ts");
    let time = ts.get(11..19).unwrap_or(ts);
    let who = match s(ev, "fromName") {
        "" => short(s(ev, "from")).to_string(),
        name => name.to_string(),
    };
    let text = match (s(ev, "text"), s(ev, "emoji")) {
        ("", "") => String::new(),
        ("", emoji) => format!("[{emoji}]"),
        (t, _) => t.to_string(),
    };
    format!(
        "{time:<8}  {:<7}  {:<28}  {:<20}  {}",
        clip(s(ev, "kind"), 7),
        clip(short(s(ev, "line")), 28),
        clip(&who, 20),
        clip(&text, 100)
    )
}

/// Prints rows of columns aligned to the widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let fmt = |cells: Vec<String>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                if i + 1 == cells.len() {
                    c.clone()
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = fmt(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&fmt(r.clone()));
    }
    out
}

/// The exit of a health check: `Ok` when the report lists no problem.
pub fn problems_found(report: &Value) -> Result<(), super::CliError> {
    let n = report["problems"].as_array().map_or(0, Vec::len);
    if n == 0 {
        Ok(())
    } else {
        Err(super::CliError::Check(format!(
            "{n} problem{} found",
            if n == 1 { "" } else { "s" }
        )))
    }
}

/// One JSON value on one line.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

/// An answer without `req` and `ok`: the fields a script wants.
pub fn fields_only(a: &Value) -> Value {
    let mut a = a.clone();
    if let Some(m) = a.as_object_mut() {
        m.remove("req");
        m.remove("ok");
    }
    a
}
