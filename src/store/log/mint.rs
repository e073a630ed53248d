//! Minting of `id` and `ts` for appended events, in the writer thread.
//!
//! Must not import anything of the log but what it is given (the last
//! stored `ts` at startup).

/// Mints ids (`msg_` + 11 hex digits of milliseconds + 6 of a per-process
/// random counter) and timestamps that never go backwards.
pub(super) struct Mint {
    last_ms: i128,
    counter: u32,
    /// The formatted `ts` of `last_ms`: events of one millisecond share it.
    ts: String,
}

impl Mint {
    pub(super) fn new(last_ms: i128) -> Mint {
        let mut seed = [0u8; 4];
        let _ = getrandom::fill(&mut seed);
        Mint {
            last_ms,
            counter: u32::from_le_bytes(seed),
            ts: String::new(),
        }
    }

    pub(super) fn next(&mut self) -> (String, String) {
        let now = time::OffsetDateTime::now_utc();
        let ms = (now.unix_timestamp_nanos() / 1_000_000).max(self.last_ms);
        if ms != self.last_ms || self.ts.is_empty() {
            self.ts = crate::clock::format_ms(ms);
        }
        self.last_ms = ms;
        self.counter = self.counter.wrapping_add(1);
        let id = format!("msg_{:011x}{:06x}", ms as u64, self.counter & 0xff_ffff);
        (id, self.ts.clone())
    }
}
