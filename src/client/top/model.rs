//! The state of `metroctl top`, pure: fed with metrod's answers (`stats`,
//! `stations`, `lines`, `claims`, `history`), the events of a follow
//! subscription and the keys pressed, it produces a [`View`] — the rows
//! to draw. No I/O and no clock (callers pass `now` in ms since the
//! epoch), so tests drive it with real answers and fixed times.
//!
//! Counts that metrod does not give are made here from the event window,
//! the newest events the subscription delivered with their offsets:
//! - **unread** of a line: events on the line after its owner's cursor
//!   (the cursor of the owner's live subscription, else the stored cursor
//!   named by the owner) that the owner did not write itself;
//! - **lag in events** of a subscription: events in the log after its
//!   cursor (the bytes are `stats`' `lag`).
//!
//! A cursor older than the window's start gets a lower bound (`n+`).
//!
//! Bounds: the window holds [`WINDOW_EVENTS`] events, the events pane
//! [`RECENT_EVENTS`], the per-second counts 121 seconds, the ids already
//! counted [`SEEN_IDS`], the filter [`FILTER_CHARS`] characters.

use crate::client::output::{count, short};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde_json::{Map, Value};

/// Events kept in the window (offsets, line, author).
pub const WINDOW_EVENTS: usize = 10_000;
/// Events kept for the events pane.
pub const RECENT_EVENTS: usize = 200;
/// How far back (bytes before the log end) the subscription may start to
/// fill the window: the oldest cursor within this distance.
pub const BACKFILL_BYTES: u64 = 4 << 20;
/// Ids remembered to count an event once when `history` and the
/// subscription both bring it.
pub const SEEN_IDS: usize = 2_000;
/// Longest filter.
pub const FILTER_CHARS: usize = 200;
/// Seconds in the sparkline.
pub const SPARK_SECONDS: usize = 60;

/// A pane `tab` moves between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Stations,
    Lines,
    Subscriptions,
    Events,
}

impl Pane {
    pub const ALL: [Pane; 4] = [
        Pane::Stations,
        Pane::Lines,
        Pane::Subscriptions,
        Pane::Events,
    ];

    fn index(self) -> usize {
        Pane::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    pub fn title(self) -> &'static str {
        match self {
            Pane::Stations => "Stations",
            Pane::Lines => "Lines",
            Pane::Subscriptions => "Subscriptions",
            Pane::Events => "Events",
        }
    }
}

/// A key, as the model understands it (the terminal loop maps crossterm's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Backspace,
    Tab,
    BackTab,
    Up,
    Down,
    /// Ctrl-C: quits even while typing a filter.
    Interrupt,
}

/// What the terminal loop does after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Redraw,
    Nothing,
}

/// Whether metrod answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Daemon {
    Connecting,
    Up,
    Down(String),
}

/// One round of answers (each the whole answer object).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub stats: Value,
    pub stations: Value,
    pub lines: Value,
    pub claims: Value,
}

/// One event of the window.
#[derive(Debug)]
struct Seen {
    offset: u64,
    line: String,
    from: String,
}

/// An event as the events pane shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub ts: String,
    pub line: String,
    pub line_name: String,
    pub from: String,
    pub kind: String,
    pub text: String,
}

impl EventRow {
    fn of(ev: &Value) -> EventRow {
        let s = |k: &str| ev[k].as_str().unwrap_or("").to_string();
        let text = match (ev["text"].as_str(), ev["emoji"].as_str()) {
            (Some(t), _) if !t.is_empty() => t.to_string(),
            (_, Some(e)) if !e.is_empty() => format!("[{e}]"),
            _ => String::new(),
        };
        let from = match ev["fromName"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => short(&s("from")).to_string(),
        };
        EventRow {
            ts: s("ts"),
            line: s("line"),
            line_name: s("lineName"),
            from,
            kind: s("kind"),
            text,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineRow {
    pub line: String,
    pub name: String,
    pub owner: String,
    pub last: String,
    pub events: String,
    pub unread: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubRow {
    pub identity: String,
    pub sub: String,
    pub mode: String,
    pub ack: String,
    pub lag_events: String,
    pub lag_bytes: String,
    pub unacked: String,
    pub oldest_unacked: String,
}

/// Everything to draw, as text.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub header: String,
    /// Why the data may be stale (metrod down), shown in place of the header's
    /// tail.
    pub problem: Option<String>,
    pub stations: Vec<(String, String, bool)>,
    pub lines: Vec<LineRow>,
    /// Lines before the filter.
    pub lines_total: usize,
    pub subscriptions: Vec<SubRow>,
    /// Events per second, oldest first, [`SPARK_SECONDS`] of them.
    pub spark: Vec<u64>,
    pub last_minute: u64,
    /// Newest last.
    pub events: Vec<EventRow>,
    pub focus: Pane,
    pub filter: String,
    pub editing: bool,
    /// Rows scrolled, per pane in [`Pane::ALL`] order.
    pub scroll: [usize; 4],
}

#[derive(Debug)]
pub struct Top {
    snapshot: Snapshot,
    daemon: Daemon,
    window: VecDeque<Seen>,
    /// The window is complete after this offset (`None`: not subscribed).
    window_start: Option<u64>,
    /// Where the current subscription started.
    subscribed_at: Option<u64>,
    /// Events at or before this offset were in the log when `history` was
    /// asked: they fill the window, not the events pane.
    live_from: u64,
    recent: VecDeque<EventRow>,
    seen_ids: VecDeque<String>,
    seen_set: HashSet<String>,
    per_second: BTreeMap<i64, u64>,
    focus: Pane,
    filter: String,
    editing: bool,
    scroll: [usize; 4],
}

impl Top {
    pub fn new(filter: Option<String>) -> Top {
        Top {
            snapshot: Snapshot::default(),
            daemon: Daemon::Connecting,
            window: VecDeque::new(),
            window_start: None,
            subscribed_at: None,
            live_from: 0,
            recent: VecDeque::new(),
            seen_ids: VecDeque::new(),
            seen_set: HashSet::new(),
            per_second: BTreeMap::new(),
            focus: Pane::Lines,
            filter: filter
                .unwrap_or_default()
                .chars()
                .take(FILTER_CHARS)
                .collect(),
            editing: false,
            scroll: [0; 4],
        }
    }

    /// A fresh round of answers: metrod is up.
    pub fn snapshot(&mut self, s: Snapshot) {
        self.snapshot = s;
        self.daemon = Daemon::Up;
    }

    /// metrod cannot be reached (the last answers stay on screen).
    pub fn down(&mut self, why: String) {
        self.daemon = Daemon::Down(why);
    }

    /// Where the subscription should start, from a `stats` answer: the
    /// oldest cursor (stored or of a live subscription) at most
    /// [`BACKFILL_BYTES`] before the log end, else the log end. Every
    /// candidate is an entry boundary, as `subscribe` requires.
    pub fn start_offset(stats: &Value) -> u64 {
        let end = stats["logBytes"].as_u64().unwrap_or(0);
        let oldest = stats["oldestOffset"].as_u64().unwrap_or(0);
        let floor = end.saturating_sub(BACKFILL_BYTES).max(oldest);
        let cursors = stats["cursors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["offset"].as_u64());
        let subs = stats["subscriptions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["cursor"].as_u64());
        cursors
            .chain(subs)
            .filter(|o| *o >= floor && *o <= end)
            .min()
            .unwrap_or(end)
    }

    /// The subscription starts over at `offset`; `end` was the log end
    /// when `history` was asked (what the events pane already has).
    pub fn subscribed(&mut self, offset: u64, end: u64) {
        self.window.clear();
        self.window_start = Some(offset);
        self.subscribed_at = Some(offset);
        self.live_from = end;
    }

    /// Where the subscription should start again, when the last `stats`
    /// shows a cursor older than its start within reach
    /// ([`Top::start_offset`]): an agent that subscribed after top did.
    pub fn backfill_wanted(&self) -> Option<u64> {
        let at = self.subscribed_at?;
        if self.snapshot.stats.is_null() {
            return None;
        }
        Some(Top::start_offset(&self.snapshot.stats)).filter(|s| *s < at)
    }

    /// The newest events from a `history` answer (newest first), shown
    /// before the subscription brings anything.
    pub fn seed(&mut self, entries: &[Value], now_ms: i64) {
        for ev in entries.iter().rev() {
            self.show(ev, now_ms);
        }
    }

    /// An event frame of the subscription.
    pub fn event(&mut self, offset: u64, ev: &Value, now_ms: i64) {
        if self.window.back().is_none_or(|s| offset > s.offset) {
            self.window.push_back(Seen {
                offset,
                line: ev["line"].as_str().unwrap_or("").to_string(),
                from: ev["from"].as_str().unwrap_or("").to_string(),
            });
            if self.window.len() > WINDOW_EVENTS {
                if let Some(dropped) = self.window.pop_front() {
                    self.window_start = Some(dropped.offset);
                }
            }
        }
        if offset > self.live_from {
            self.show(ev, now_ms);
        }
    }

    /// A gap frame: retention deleted what came before `offset`.
    pub fn gap(&mut self, offset: u64) {
        self.window_start = Some(self.window_start.map_or(offset, |s| s.max(offset)));
    }

    /// Puts an event in the events pane and the per-second counts, once.
    fn show(&mut self, ev: &Value, now_ms: i64) {
        if let Some(id) = ev["id"].as_str() {
            if !self.seen_set.insert(id.to_string()) {
                return;
            }
            self.seen_ids.push_back(id.to_string());
            if self.seen_ids.len() > SEEN_IDS {
                if let Some(old) = self.seen_ids.pop_front() {
                    self.seen_set.remove(&old);
                }
            }
        }
        if let Some(ms) = ev["ts"].as_str().and_then(ts_ms) {
            let (sec, now) = (ms.div_euclid(1000), now_ms.div_euclid(1000));
            if (now - 60..=now + 60).contains(&sec) {
                *self.per_second.entry(sec).or_insert(0) += 1;
            }
            self.per_second = self.per_second.split_off(&(now - 60));
        }
        self.recent.push_back(EventRow::of(ev));
        if self.recent.len() > RECENT_EVENTS {
            self.recent.pop_front();
        }
    }

    /// A key; says whether to quit or redraw.
    pub fn key(&mut self, key: Key) -> Action {
        if key == Key::Interrupt {
            return Action::Quit;
        }
        if self.editing {
            match key {
                Key::Enter => self.editing = false,
                Key::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                Key::Backspace => {
                    self.filter.pop();
                }
                Key::Char(c) if !c.is_control() && self.filter.chars().count() < FILTER_CHARS => {
                    self.filter.push(c)
                }
                _ => return Action::Nothing,
            }
            self.scroll = [0; 4];
            return Action::Redraw;
        }
        let i = self.focus.index();
        match key {
            Key::Char('q') => return Action::Quit,
            Key::Char('/') => self.editing = true,
            Key::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.scroll = [0; 4];
            }
            Key::Tab => self.focus = Pane::ALL[(i + 1) % 4],
            Key::BackTab => self.focus = Pane::ALL[(i + 3) % 4],
            // The events pane has the newest at the bottom: up goes back.
            Key::Down | Key::Char('j') | Key::Up | Key::Char('k') => {
                let back = matches!(key, Key::Up | Key::Char('k')) == (self.focus == Pane::Events);
                self.scroll[i] = if back {
                    self.scroll[i].saturating_add(1)
                } else {
                    self.scroll[i].saturating_sub(1)
                };
            }
            _ => return Action::Nothing,
        }
        Action::Redraw
    }

    fn matches(&self, line: &str, name: &str) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let f = self.filter.to_lowercase();
        line.to_lowercase().contains(&f) || name.to_lowercase().contains(&f)
    }

    /// The cursor an owner reads with: its live subscription's (the oldest
    /// if several), else the stored cursor of that name.
    fn owner_cursor(&self, owner: &str) -> Option<u64> {
        let live = self.snapshot.stats["subscriptions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["as"].as_str() == Some(owner) && s["finished"] != Value::Bool(true))
            .filter_map(|s| s["cursor"].as_u64())
            .min();
        live.or_else(|| {
            self.snapshot.stats["cursors"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"].as_str() == Some(short(owner)))
                .and_then(|c| c["offset"].as_u64())
        })
    }

    /// Events in the window after `cursor`, counted by `count`; `n+` when
    /// the cursor is older than the window.
    fn bound(&self, cursor: u64, n: usize) -> String {
        match self.window_start {
            None => "…".into(),
            Some(start) if cursor < start => format!("{n}+"),
            Some(_) => n.to_string(),
        }
    }

    /// What to draw at `now_ms`.
    pub fn view(&self, now_ms: i64) -> View {
        let stats = &self.snapshot.stats;
        let header = match &self.daemon {
            Daemon::Connecting => "metro top · connecting to metrod…".to_string(),
            _ if stats.is_null() => "metro top".to_string(),
            _ => {
                let subs = stats["subscriptions"].as_array().map_or(0, Vec::len);
                let conns = stats["connections"].as_u64().unwrap_or(0);
                format!(
                    "metro top · metrod up {} · {} · {} · {} · log {}",
                    duration(stats["uptimeMs"].as_u64().unwrap_or(0)),
                    count(conns, "connection"),
                    count(subs as u64, "subscription"),
                    count(stats["claims"].as_u64().unwrap_or(0), "claim"),
                    bytes(stats["logBytes"].as_u64().unwrap_or(0)),
                )
            }
        };
        let problem = match &self.daemon {
            Daemon::Down(why) => Some(why.clone()),
            _ => None,
        };
        let stations = self.snapshot.stations["stations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let status = s["status"].as_str().unwrap_or("").to_string();
                let ok = status == "ok";
                (s["name"].as_str().unwrap_or("").to_string(), status, ok)
            })
            .collect();
        let (lines, lines_total) = self.line_rows(now_ms);
        let subscriptions = self.sub_rows();
        let now_sec = now_ms.div_euclid(1000);
        let spark: Vec<u64> = (now_sec - SPARK_SECONDS as i64 + 1..=now_sec)
            .map(|s| self.per_second.get(&s).copied().unwrap_or(0))
            .collect();
        let events = self
            .recent
            .iter()
            .filter(|e| self.matches(&e.line, &e.line_name))
            .cloned()
            .collect();
        View {
            header,
            problem,
            stations,
            lines,
            lines_total,
            subscriptions,
            last_minute: spark.iter().sum(),
            spark,
            events,
            focus: self.focus,
            filter: self.filter.clone(),
            editing: self.editing,
            scroll: self.scroll,
        }
    }

    fn line_rows(&self, now_ms: i64) -> (Vec<LineRow>, usize) {
        let claims = self.snapshot.claims["claims"].as_object();
        let empty = Map::new();
        let claims = claims.unwrap_or(&empty);
        let ephemeral: HashSet<&str> = self.snapshot.claims["ephemeral"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        // Rows: the lines index (most recent first), then claimed lines it
        // does not hold.
        let mut rows: Vec<(String, String, Option<String>, String, String)> = Vec::new();
        let mut listed = HashSet::new();
        for l in self.snapshot.lines["lines"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let line = l["line"].as_str().unwrap_or("").to_string();
            let owner = claims
                .get(&line)
                .and_then(Value::as_str)
                .or(l["owner"].as_str())
                .map(String::from);
            let last = match l["lastTs"].as_str().and_then(ts_ms) {
                Some(ms) => format!(
                    "{} ago {}",
                    duration(now_ms.saturating_sub(ms).max(0) as u64),
                    l["lastKind"].as_str().unwrap_or("")
                ),
                None => String::new(),
            };
            listed.insert(line.clone());
            rows.push((
                line,
                l["name"].as_str().unwrap_or("").to_string(),
                owner,
                last,
                l["events"].as_u64().unwrap_or(0).to_string(),
            ));
        }
        for (line, owner) in claims {
            if !listed.contains(line) {
                rows.push((
                    line.clone(),
                    String::new(),
                    owner.as_str().map(String::from),
                    String::new(),
                    "0".into(),
                ));
            }
        }
        let total = rows.len();
        // Unread: one pass over the window for every owned line.
        let mut wanted: HashMap<&str, (&str, u64, usize)> = HashMap::new();
        let mut no_cursor = HashSet::new();
        for (line, _, owner, _, _) in &rows {
            if let Some(o) = owner {
                match self.owner_cursor(o) {
                    Some(c) => {
                        wanted.insert(line.as_str(), (o.as_str(), c, 0));
                    }
                    None => {
                        no_cursor.insert(line.as_str());
                    }
                }
            }
        }
        for s in &self.window {
            if let Some((owner, cursor, n)) = wanted.get_mut(s.line.as_str()) {
                if s.offset > *cursor && s.from != *owner {
                    *n += 1;
                }
            }
        }
        let out = rows
            .iter()
            .filter(|(line, name, ..)| self.matches(line, name))
            .map(|(line, name, owner, last, events)| {
                let unread = match wanted.get(line.as_str()) {
                    Some((_, cursor, n)) => self.bound(*cursor, *n),
                    None if no_cursor.contains(line.as_str()) => "no cursor".into(),
                    None => "-".into(),
                };
                let mut owner = owner.as_deref().map(short).unwrap_or("-").to_string();
                if ephemeral.contains(line.as_str()) {
                    owner.push_str(" (ephemeral)");
                }
                LineRow {
                    line: short(line).to_string(),
                    name: name.clone(),
                    owner,
                    last: last.clone(),
                    events: events.clone(),
                    unread,
                }
            })
            .collect();
        (out, total)
    }

    fn sub_rows(&self) -> Vec<SubRow> {
        self.snapshot.stats["subscriptions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let cursor = s["cursor"].as_u64().unwrap_or(0);
                let after = self.window.len() - self.window.partition_point(|e| e.offset <= cursor);
                SubRow {
                    identity: s["as"].as_str().map(short).unwrap_or("-").to_string(),
                    sub: format!(
                        "{}/{}",
                        s["conn"].as_u64().unwrap_or(0),
                        s["sub"].as_str().unwrap_or("")
                    ),
                    mode: s["mode"].as_str().unwrap_or("").to_string(),
                    ack: s["ack"].as_str().unwrap_or("").to_string(),
                    lag_events: self.bound(cursor, after),
                    lag_bytes: bytes(s["lag"].as_u64().unwrap_or(0)),
                    unacked: s["unacked"].as_u64().unwrap_or(0).to_string(),
                    oldest_unacked: s["oldestUnackedMs"]
                        .as_u64()
                        .map(duration)
                        .unwrap_or_else(|| "-".into()),
                }
            })
            .collect()
    }
}

/// An RFC 3339 time in ms since the epoch.
pub fn ts_ms(ts: &str) -> Option<i64> {
    crate::clock::parse_ms(ts).and_then(|ms| i64::try_from(ms).ok())
}

/// `412ms`, `12s`, `5m`, `3h`, `2d`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}s", ms / 1_000),
        60_000..3_600_000 => format!("{}m", ms / 60_000),
        3_600_000..86_400_000 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

/// `798 B`, `48.0 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if n < 1024 {
        format!("{n} B")
    } else if f < K * K {
        format!("{:.1} KiB", f / K)
    } else if f < K * K * K {
        format!("{:.1} MiB", f / (K * K))
    } else {
        format!("{:.1} GiB", f / (K * K * K))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(id: &str, line: &str, from: &str, ts: &str, text: &str) -> Value {
        json!({"id": id, "ts": ts, "station": "telegram", "kind": "inbound",
               "line": line, "from": from, "to": line, "text": text})
    }

    const T0: &str = "2026-11-28T03:21:21.000Z";

    fn t0() -> i64 {
        ts_ms(T0).unwrap()
    }

    #[test]
    fn start_offset_is_the_oldest_cursor_near_the_end() {
        let stats = json!({"logBytes": 10_000_000u64, "oldestOffset": 0,
            "cursors": [{"offset": 9_000_000u64}, {"offset": 100}],
            "subscriptions": [{"cursor": 9_500_000u64}]});
        assert_eq!(Top::start_offset(&stats), 9_000_000);
        let stats = json!({"logBytes": 500, "cursors": [{"offset": 100}], "subscriptions": []});
        assert_eq!(Top::start_offset(&stats), 100);
        let stats = json!({"logBytes": 500});
        assert_eq!(Top::start_offset(&stats), 500);
    }

    #[test]
    fn unread_counts_events_after_the_owner_cursor_not_its_own() {
        let mut top = Top::new(None);
        let a = "metro://telegram/1";
        let owner = "metro://claude/user/a";
        top.snapshot(Snapshot {
            stats: json!({"logBytes": 400, "subscriptions": [],
                "cursors": [{"name": "claude/user/a", "offset": 200}]}),
            stations: json!({"stations": []}),
            lines: json!({"lines": [{"line": a, "events": 4, "lastTs": T0, "lastKind": "inbound", "owner": owner}]}),
            claims: json!({"claims": {a: owner}, "ephemeral": []}),
        });
        top.subscribed(100, 0);
        top.event(
            200,
            &ev("m1", a, "metro://telegram/user/9", T0, "one"),
            t0(),
        );
        top.event(
            300,
            &ev("m2", a, "metro://telegram/user/9", T0, "two"),
            t0(),
        );
        top.event(350, &ev("m3", a, owner, T0, "mine"), t0());
        top.event(
            400,
            &ev("m4", a, "metro://telegram/user/9", T0, "three"),
            t0(),
        );
        let v = top.view(t0() + 5_000);
        assert_eq!(v.lines[0].unread, "2");
        assert_eq!(v.lines[0].last, "5s ago inbound");
        // A cursor older than the window is a lower bound.
        top.subscribed(300, 0);
        top.event(
            400,
            &ev("m4", a, "metro://telegram/user/9", T0, "three"),
            t0(),
        );
        assert_eq!(top.view(t0()).lines[0].unread, "1+");
        // The events pane and the sparkline counted each event once.
        assert_eq!(top.view(t0()).events.len(), 4);
        assert_eq!(top.view(t0()).last_minute, 4);
    }

    #[test]
    fn filter_and_keys() {
        let mut top = Top::new(None);
        top.seed(
            &[
                ev("m2", "metro://telegram/2", "x", T0, "two"),
                ev("m1", "metro://telegram/1", "x", T0, "one"),
            ],
            t0(),
        );
        assert_eq!(top.key(Key::Char('/')), Action::Redraw);
        assert_eq!(top.key(Key::Char('q')), Action::Redraw, "q is typed");
        top.key(Key::Backspace);
        top.key(Key::Char('2'));
        top.key(Key::Enter);
        let v = top.view(t0());
        assert_eq!(v.filter, "2");
        assert_eq!(
            v.events.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
            ["two"]
        );
        assert_eq!(top.key(Key::Tab), Action::Redraw);
        assert_eq!(top.view(t0()).focus, Pane::Subscriptions);
        top.key(Key::Esc);
        assert_eq!(top.view(t0()).events.len(), 2);
        assert_eq!(top.key(Key::Char('q')), Action::Quit);
        top.key(Key::Char('/'));
        assert_eq!(top.key(Key::Interrupt), Action::Quit);
    }

    #[test]
    fn sparkline_buckets_by_event_time() {
        let mut top = Top::new(None);
        let now = t0();
        top.event(1, &ev("a", "metro://x/1", "f", T0, ""), now);
        top.event(2, &ev("b", "metro://x/1", "f", T0, ""), now);
        let old = crate::clock::format_ms((now - 120_000) as i128);
        top.event(3, &ev("c", "metro://x/1", "f", &old, ""), now);
        let v = top.view(now + 2_000);
        assert_eq!(v.spark.len(), SPARK_SECONDS);
        assert_eq!(v.spark[SPARK_SECONDS - 3], 2);
        assert_eq!(v.last_minute, 2);
    }

    #[test]
    fn formats() {
        assert_eq!(duration(412), "412ms");
        assert_eq!(duration(61_000), "1m");
        assert_eq!(bytes(798), "798 B");
        assert_eq!(bytes(49_152), "48.0 KiB");
    }
}
