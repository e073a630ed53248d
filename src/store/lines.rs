//! Recently seen conversations (`lines` op): station, display name, last
//! event time and kind. Kept in memory, fed by the log writer, and seeded at
//! startup from the last megabyte of the log only.

use std::collections::HashMap;

use serde_json::Value;

use crate::proto::Event;

#[derive(Debug, Clone, PartialEq)]
pub struct LineInfo {
    pub station: String,
    pub name: Option<String>,
    pub last_ts: String,
    pub last_kind: String,
    pub events: u64,
}

/// Lines kept at most; the least recently active are forgotten first.
const CAP: usize = 10_000;

#[derive(Debug, Default)]
pub struct LineIndex {
    map: HashMap<String, LineInfo>,
}

impl LineIndex {
    pub fn observe(&mut self, ev: &Event) {
        let name = match ev.extra.get("lineName") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        self.touch(&ev.line, &ev.station, name, &ev.ts, &ev.kind);
    }

    /// Observes a stored line (startup seeding); lines that are not events
    /// are ignored.
    pub fn observe_json(&mut self, json: &[u8]) {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Seen {
            line: String,
            #[serde(default)]
            station: Option<String>,
            #[serde(default)]
            line_name: Option<String>,
            #[serde(default)]
            ts: String,
            #[serde(default)]
            kind: Option<String>,
        }
        if let Ok(s) = serde_json::from_slice::<Seen>(json) {
            let station = s
                .station
                .unwrap_or_else(|| crate::line::station_of(&s.line).to_string());
            let kind = s.kind.unwrap_or_else(|| "inbound".into());
            self.touch(&s.line, &station, s.line_name, &s.ts, &kind);
        }
    }

    fn touch(&mut self, line: &str, station: &str, name: Option<String>, ts: &str, kind: &str) {
        if let Some(info) = self.map.get_mut(line) {
            if name.is_some() {
                info.name = name;
            }
            info.last_ts.clear();
            info.last_ts.push_str(ts);
            info.last_kind.clear();
            info.last_kind.push_str(kind);
            info.events += 1;
            return;
        }
        if self.map.len() >= CAP {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by(|a, b| a.1.last_ts.cmp(&b.1.last_ts))
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(
            line.to_string(),
            LineInfo {
                station: station.to_string(),
                name,
                last_ts: ts.to_string(),
                last_kind: kind.to_string(),
                events: 1,
            },
        );
    }

    /// Lines, most recently active first.
    pub fn list(&self) -> Vec<(String, LineInfo)> {
        let mut v: Vec<(String, LineInfo)> = self
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| b.1.last_ts.cmp(&a.1.last_ts).then(a.0.cmp(&b.0)));
        v
    }
}
