//! How `metroctl` prints: JSON lines when stdout is not a terminal (or with
//! `--json`), aligned human rows and sentences on a terminal.
//! `METRO_OUTPUT=human` (or `json`) decides instead of the terminal check,
//! for scripts that want the sentences and for tests.
//!
//! Human output goes through anstream ([`say`], [`note`]): its colors and
//! status glyphs' colors stay on a color terminal and are stripped when
//! the stream is not one, or `NO_COLOR` is set. Words for durations,
//! counts and sizes ([`duration`], [`count`], [`bytes`]) and the event
//! rows of `tail`, `history` and `fetch` ([`EventRows`]) live here too.

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

/// Colors of the human output.
pub mod style {
    use anstyle::{AnsiColor, Effects, Style};

    pub const GOOD: Style = AnsiColor::Green.on_default();
    pub const BAD: Style = AnsiColor::Red.on_default().effects(Effects::BOLD);
    pub const WARN: Style = AnsiColor::Yellow.on_default();
    pub const DIM: Style = Style::new().effects(Effects::DIMMED);
    pub const BOLD: Style = Style::new().effects(Effects::BOLD);
    pub const ID: Style = AnsiColor::Cyan.on_default();
}

/// `text` in `style` (stripped again by [`say`] where colors are off).
pub fn paint(style: anstyle::Style, text: impl std::fmt::Display) -> String {
    format!("{style}{text}{style:#}")
}

/// The glyph of a good verdict: a green check.
pub fn good() -> String {
    paint(style::GOOD, "✓")
}

/// The glyph of a problem: a red cross.
pub fn bad() -> String {
    paint(style::BAD, "✗")
}

/// The glyph of a warning: a yellow bang.
pub fn warn() -> String {
    paint(style::WARN, "!")
}

/// A human line on stdout.
pub fn say(line: impl std::fmt::Display) {
    anstream::println!("{line}");
}

/// A human line on stderr (notes, empty states).
pub fn note(line: impl std::fmt::Display) {
    anstream::eprintln!("{line}");
}

/// `1 connection`, `2 connections`.
pub fn count(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A duration in words: `12 s`, `10 min`, `3 h 5 min`, `4 days`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 if ms > 0 => format!("{ms} ms"),
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..172_800 => match (s / 3600, s % 3600 / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        },
        _ => format!("{} days", s / 86_400),
    }
}

/// How long ago an RFC 3339 time was, in words (`3 min ago`); the time
/// itself when it cannot be read or is in the future.
pub fn ago(ts: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let Ok(t) = time::OffsetDateTime::parse(ts, &Rfc3339) else {
        return ts.to_string();
    };
    let ms = (time::OffsetDateTime::now_utc() - t).whole_milliseconds();
    match u64::try_from(ms) {
        Ok(ms) => format!("{} ago", duration(ms)),
        Err(_) => ts.to_string(),
    }
}

/// A size in words: `812 bytes`, `48.1 KiB`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return count(n, "byte");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A URI without `metro://`.
pub fn short(uri: &str) -> &str {
    uri.strip_prefix(crate::line::SCHEME).unwrap_or(uri)
}

/// `text` on one line of at most `max` characters; control characters
/// (an escape sequence in a chat message) are never sent to the terminal.
fn clip(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| match c {
            '\n' => '⏎',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn pad(text: &str, width: usize) -> String {
    let n = text.chars().count();
    format!("{text}{}", " ".repeat(width.saturating_sub(n)))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Events as human rows (`tail`, `history`, `fetch`): a header, then per
/// event its time (UTC; with the date when not today), kind, line (a
/// webhook's label instead of its random id), sender, the message id that
/// `reply`, `edit` and `react` take, and the text.
pub struct EventRows {
    /// Today's date, `YYYY-MM-DD` (UTC).
    today: String,
    /// Webhook endpoint id → label.
    labels: std::collections::HashMap<String, String>,
    /// Full ids and text, nothing clipped.
    wide: bool,
}

const TIME_W: usize = 12;
const KIND_W: usize = 8;
const LINE_W: usize = 26;
const FROM_W: usize = 18;
/// Metro's ids (`msg_` and 17 hex digits) fit whole: an id is shown
/// whole or not at all, as `reply`, `edit` and `react` need it.
const ID_W: usize = 21;

impl EventRows {
    pub fn new(wide: bool) -> EventRows {
        EventRows {
            today: time::OffsetDateTime::now_utc().date().to_string(),
            labels: Default::default(),
            wide,
        }
    }

    /// Shows webhook lines by these endpoints' labels (`webhookList`'s
    /// `endpoints`).
    pub fn with_webhooks(mut self, endpoints: &Value) -> EventRows {
        for e in endpoints.as_array().into_iter().flatten() {
            if let (Some(id), Some(label)) = (e["id"].as_str(), e["label"].as_str()) {
                self.labels.insert(id.to_string(), label.to_string());
            }
        }
        self
    }

    pub fn header(&self) -> String {
        paint(
            style::BOLD,
            format!(
                "{}  {}  {}  {}  {}  TEXT",
                pad("TIME (UTC)", TIME_W),
                pad("KIND", KIND_W),
                pad("LINE", LINE_W),
                pad("FROM", FROM_W),
                pad("ID", ID_W)
            ),
        )
    }

    /// The id to show: the event's `messageId` (the platform's id, which
    /// `reply`, `edit` and `react` take on its line; for an edit or a
    /// reaction, the message it is about), else metro's `msg_…` id; with
    /// `wide`, always metro's id of the event itself.
    fn id<'a>(&self, ev: &'a Value) -> &'a str {
        match s(ev, "messageId") {
            m if !self.wide && !m.is_empty() => m,
            _ => s(ev, "id"),
        }
    }

    fn time(&self, ts: &str) -> String {
        let date = ts.get(..10).unwrap_or("");
        if date == self.today || date.len() < 10 {
            return ts.get(11..19).unwrap_or(ts).to_string();
        }
        let month = date
            .get(5..7)
            .and_then(|m| m.parse::<usize>().ok())
            .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
            .copied()
            .unwrap_or("?");
        let day = date.get(8..10).unwrap_or("");
        let this_year = self.today.get(..4) == date.get(..4);
        let hm = ts.get(11..16).unwrap_or("");
        if this_year {
            format!("{month} {day} {hm}")
        } else {
            date.to_string()
        }
    }

    fn line(&self, line: &str) -> String {
        let short = short(line);
        match short
            .strip_prefix("webhook/")
            .and_then(|id| self.labels.get(id))
        {
            Some(label) => format!("webhook/{label}"),
            None => short.to_string(),
        }
    }

    /// One event as a row.
    pub fn row(&self, ev: &Value) -> String {
        let who = match s(ev, "fromName") {
            "" => short(s(ev, "from")).to_string(),
            name => name.to_string(),
        };
        let text = match (s(ev, "text"), s(ev, "emoji")) {
            ("", "") => String::new(),
            ("", emoji) => format!("[{emoji}]"),
            (t, _) => t.to_string(),
        };
        let (line, who, id, text) = if self.wide {
            (
                self.line(s(ev, "line")),
                who,
                self.id(ev).to_string(),
                clip(&text, usize::MAX),
            )
        } else {
            (
                clip(&self.line(s(ev, "line")), LINE_W),
                clip(&who, FROM_W),
                self.id(ev).to_string(),
                clip(&text, 100),
            )
        };
        let kind = s(ev, "kind");
        let kind_style = match kind {
            "inbound" => style::GOOD,
            "system" => style::WARN,
            _ => anstyle::Style::new(),
        };
        format!(
            "{}  {}  {}  {}  {}  {text}",
            paint(style::DIM, pad(&self.time(s(ev, "ts")), TIME_W)),
            paint(kind_style, pad(kind, KIND_W)),
            pad(&line, LINE_W),
            pad(&who, FROM_W),
            paint(style::ID, pad(&id, ID_W)),
        )
    }
}

/// One event as a human row, without the header (for callers that print
/// one event).
pub fn event_row(ev: &Value) -> String {
    EventRows::new(false).row(ev)
}

/// The width of `text` on screen (styles are not).
fn width(text: &str) -> usize {
    anstream::adapter::strip_str(text)
        .to_string()
        .chars()
        .count()
}

/// Prints rows of columns aligned to the widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(width(c));
            }
        }
    }
    let fmt = |cells: Vec<String>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(width(c));
                if i + 1 == cells.len() {
                    c.clone()
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = paint(
        style::BOLD,
        fmt(header.iter().map(|h| h.to_string()).collect()),
    );
    for r in rows {
        out.push('\n');
        out.push_str(&fmt(r.clone()));
    }
    out
}

/// The exit of a health check: `Ok` when the report lists no problem.
/// On a terminal the summary is the report's last line (and
/// [`super::main`] does not repeat it on stderr).
pub fn problems_found(report: &Value) -> Result<(), super::CliError> {
    let n = report["problems"].as_array().map_or(0, Vec::len) as u64;
    if n == 0 {
        return Ok(());
    }
    let summary = format!("{} found", count(n, "problem"));
    if !json_mode(false) {
        say(format!("\n{} {}", bad(), paint(style::BAD, &summary)));
    }
    Err(super::CliError::Check(summary))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn words_for_durations_counts_and_sizes() {
        assert_eq!(duration(0), "0 s");
        assert_eq!(duration(412), "412 ms");
        assert_eq!(duration(59_999), "59 s");
        assert_eq!(duration(600_000), "10 min");
        assert_eq!(duration(3_600_000), "1 h");
        assert_eq!(duration(3_900_000), "1 h 5 min");
        assert_eq!(duration(4 * 86_400_000), "4 days");
        assert_eq!(count(1, "connection"), "1 connection");
        assert_eq!(count(0, "connection"), "0 connections");
        assert_eq!(bytes(1), "1 byte");
        assert_eq!(bytes(812), "812 bytes");
        assert_eq!(bytes(49_254), "48.1 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(
            ago("2001-02-03T04:05:06.000Z").split(' ').nth(1),
            Some("days")
        );
        assert_eq!(ago("not a time"), "not a time");
    }

    fn rows(today: &str, wide: bool) -> EventRows {
        EventRows {
            today: today.into(),
            labels: [("psix".to_string(), "github".to_string())].into(),
            wide,
        }
    }

    #[test]
    fn event_rows_show_the_date_when_not_today_and_whole_words() {
        let ev = json!({"id":"msg_1a2202bf6e93f2b45","ts":"2026-11-28T03:21:21.897Z",
            "kind":"callback","line":"metro://webhook/psix","from":"metro://webhook/psix",
            "fromName":"GitHub","text":"push\nto main\u{1b}[31m","messageId":"4567"});
        let today = rows("2026-11-28", false).row(&ev);
        let strip = |s: &str| anstream::adapter::strip_str(s).to_string();
        let today = strip(&today);
        assert!(
            today.starts_with("03:21:21      callback  webhook/github "),
            "{today}"
        );
        assert!(today.contains("  4567 "), "{today}");
        assert!(today.ends_with("push⏎to main\u{FFFD}[31m"), "{today:?}");
        let later = strip(&rows("2026-11-29", false).row(&ev));
        assert!(later.starts_with("Nov 28 03:21  callback"), "{later}");
        let next_year = strip(&rows("2027-01-02", false).row(&ev));
        assert!(
            next_year.starts_with("2026-11-28    callback"),
            "{next_year}"
        );
        let wide = strip(&rows("2026-11-28", true).row(&ev));
        assert!(wide.contains("  msg_1a2202bf6e93f2b45  "), "{wide}");
    }
}
