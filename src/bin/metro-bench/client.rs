//! The bench's own protocol clients: tokio `UnixStream`, JSON lines,
//! requests pipelined and correlated by `req`. Hot loops never parse JSON:
//! they count lines and look for a few fixed byte patterns.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

use crate::Error;

/// A connection used for setup requests; split it for the hot loops.
pub struct Conn {
    pub rd: BufReader<OwnedReadHalf>,
    pub wr: OwnedWriteHalf,
    next_req: u64,
}

impl Conn {
    pub async fn connect(path: &Path) -> Result<Conn, Error> {
        let s = UnixStream::connect(path)
            .await
            .map_err(|e| format!("connect {}: {e}", path.display()))?;
        let (r, w) = s.into_split();
        Ok(Conn {
            rd: BufReader::with_capacity(256 << 10, r),
            wr: w,
            next_req: 1,
        })
    }

    /// Sends `v` with a fresh `req` and waits for its answer. Only for use
    /// before any event frames can arrive on this connection (a subscribe
    /// answer is always written before its first frame).
    pub async fn request(&mut self, mut v: Value) -> Result<Value, Error> {
        let req = self.next_req;
        self.next_req += 1;
        v["req"] = json!(req);
        let mut line = serde_json::to_vec(&v)?;
        line.push(b'\n');
        self.wr.write_all(&line).await?;
        loop {
            let mut buf = String::new();
            if self.rd.read_line(&mut buf).await? == 0 {
                return Err(
                    format!("connection closed while waiting for the answer to {v}").into(),
                );
            }
            let a: Value = serde_json::from_str(&buf)?;
            if a.get("req") == Some(&json!(req)) {
                if a["ok"] != json!(true) {
                    return Err(format!("{v} -> {a}").into());
                }
                return Ok(a);
            }
        }
    }

    /// Subscribes with `fields`; returns the sub id.
    pub async fn subscribe(&mut self, mut fields: Value) -> Result<String, Error> {
        fields["op"] = json!("subscribe");
        let a = self.request(fields).await?;
        Ok(a["sub"].as_str().unwrap_or_default().to_string())
    }
}

/// Opens `n` connections, each with one subscription made of `fields`
/// (with `{i}` in string values replaced by the subscriber's number).
pub async fn subscribers(path: &Path, n: usize, fields: &Value) -> Result<Vec<Conn>, Error> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Conn::connect(path).await?;
        let f = substitute(fields, &format!("{i:03}"));
        c.subscribe(f).await?;
        out.push(c);
    }
    Ok(out)
}

fn substitute(v: &Value, i: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("{i}", i)),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), substitute(v, i)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Reads frames until `n` lines have arrived; returns when the last one
/// came. `seen` is bumped as lines arrive. The connection stays open (its
/// sending side too: closing it would end follow subscriptions) until the
/// count is reached.
pub async fn count_lines(conn: Conn, n: u64, seen: Arc<AtomicU64>) -> Result<Instant, Error> {
    let Conn {
        mut rd, wr: _wr, ..
    } = conn;
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0u64;
    while got < n {
        let k = rd.read(&mut buf).await?;
        if k == 0 {
            return Err(format!("connection closed after {got} of {n} frames").into());
        }
        let lines = bytecount(&buf[..k], b'\n');
        got += lines;
        seen.fetch_add(lines, Ordering::Relaxed);
    }
    Ok(Instant::now())
}

/// Waits for every [`count_lines`] reader (60 s at most): the latest time
/// one of them finished, or `since` when that is later.
pub async fn all_read(
    readers: Vec<tokio::task::JoinHandle<Result<Instant, Error>>>,
    since: Instant,
) -> Result<Instant, Error> {
    let mut last = since;
    for r in readers {
        let t = tokio::time::timeout(std::time::Duration::from_secs(60), r)
            .await
            .map_err(|_| "subscribers did not receive every event within 60 s")???;
        last = last.max(t);
    }
    Ok(last)
}

pub fn bytecount(b: &[u8], c: u8) -> u64 {
    b.iter().filter(|&&x| x == c).count() as u64
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// When a publisher stops.
#[derive(Clone, Copy)]
pub struct Limit {
    pub events: u64,
    pub until: Instant,
}

/// What a publisher achieved.
pub struct PubStats {
    pub answered: u64,
    pub first_sent: Instant,
    pub last_answer: Instant,
}

impl PubStats {
    /// Seconds from the first send to the last answer.
    pub fn secs(&self) -> f64 {
        self.last_answer
            .duration_since(self.first_sent)
            .as_secs_f64()
            .max(1e-9)
    }

    pub fn rate(&self) -> f64 {
        self.answered as f64 / self.secs()
    }
}

/// How a publisher speaks to the system under test: the same publisher
/// loop drives metro (JSON lines) and Redis (RESP, see `resp.rs`).
pub trait Wire: Clone + Send + Sync + 'static {
    type Answers: Answers;
    /// Appends the `i`-th publish request of publisher `p`.
    fn publish(&self, p: usize, i: u64, out: &mut Vec<u8>);
    /// A fresh answer counter for one connection.
    fn answers(&self) -> Self::Answers;
}

/// Counts the answers in a stream of bytes read from one connection.
pub trait Answers: Send + 'static {
    /// Complete answers in `chunk` (a partial one is carried to the next
    /// chunk). An error answer is an `Err`.
    fn count(&mut self, chunk: &[u8]) -> Result<u64, Error>;
}

/// metro's `publish` with the event written by `body(p, i, out)`.
#[derive(Clone)]
pub struct Metro<F>(pub F);

impl<F> Wire for Metro<F>
where
    F: Fn(usize, u64, &mut Vec<u8>) + Send + Sync + Clone + 'static,
{
    type Answers = JsonLines;

    fn publish(&self, p: usize, i: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"op\":\"publish\",\"req\":");
        out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
        out.extend_from_slice(b",\"event\":");
        (self.0)(p, i, out);
        out.extend_from_slice(b"}\n");
    }

    fn answers(&self) -> JsonLines {
        JsonLines
    }
}

/// metro's answers: one line each, never parsed (only `"ok":false` is
/// looked for).
pub struct JsonLines;

impl Answers for JsonLines {
    fn count(&mut self, chunk: &[u8]) -> Result<u64, Error> {
        if let Some(i) = find(chunk, b"\"ok\":false") {
            let end = chunk.len().min(i + 300);
            return Err(format!(
                "publish failed: {}",
                String::from_utf8_lossy(&chunk[i..end])
            )
            .into());
        }
        Ok(bytecount(chunk, b'\n'))
    }
}

/// Publishes over `conn` with up to `window` requests in flight until
/// `limit`, then closes its sending side and counts answers to EOF.
pub async fn publisher<W: Wire>(
    conn: Conn,
    window: usize,
    limit: Limit,
    p: usize,
    wire: W,
) -> Result<PubStats, Error> {
    let Conn { mut rd, mut wr, .. } = conn;
    let permits = Arc::new(Semaphore::new(window));
    let reader_permits = permits.clone();
    let mut answers = wire.answers();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 << 10];
        let mut answered = 0u64;
        let mut last = Instant::now();
        loop {
            let k = rd.read(&mut buf).await?;
            if k == 0 {
                return Ok::<_, Error>((answered, last));
            }
            let n = answers.count(&buf[..k])?;
            if n > 0 {
                answered += n;
                last = Instant::now();
                reader_permits.add_permits(n as usize);
            }
        }
    });
    let first_sent = Instant::now();
    let mut sent = 0u64;
    let mut out = Vec::with_capacity(64 << 10);
    while sent < limit.events && Instant::now() < limit.until {
        let permit = permits.acquire().await?;
        permit.forget();
        let mut batch = 1u64;
        while batch < limit.events - sent && batch < 256 {
            match permits.try_acquire() {
                Ok(permit) => {
                    permit.forget();
                    batch += 1;
                }
                Err(_) => break,
            }
        }
        out.clear();
        for i in sent..sent + batch {
            wire.publish(p, i, &mut out);
        }
        wr.write_all(&out).await?;
        sent += batch;
    }
    wr.shutdown().await?;
    let (answered, last_answer) = reader.await??;
    if answered != sent {
        return Err(format!("sent {sent} publishes, {answered} answered").into());
    }
    Ok(PubStats {
        answered,
        first_sent,
        last_answer,
    })
}

/// Runs `publishers` metro publishers (own connections) with `window` in
/// flight each; `body(p, i, out)` appends the `event` object of publisher
/// `p`'s `i`-th publish. Returns their combined stats.
pub async fn publish_all<F>(
    path: &Path,
    publishers: usize,
    window: usize,
    limit: Limit,
    body: F,
) -> Result<PubStats, Error>
where
    F: Fn(usize, u64, &mut Vec<u8>) + Send + Sync + Clone + 'static,
{
    publish_all_wire(path, publishers, window, limit, Metro(body)).await
}

/// [`publish_all`] in any [`Wire`].
pub async fn publish_all_wire<W: Wire>(
    path: &Path,
    publishers: usize,
    window: usize,
    limit: Limit,
    wire: W,
) -> Result<PubStats, Error> {
    let mut conns = Vec::new();
    for _ in 0..publishers {
        conns.push(Conn::connect(path).await?);
    }
    let per = Limit {
        events: limit.events.div_ceil(publishers as u64),
        until: limit.until,
    };
    let mut tasks = Vec::new();
    for (p, c) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(publisher(c, window, per, p, wire.clone())));
    }
    let mut total: Option<PubStats> = None;
    for t in tasks {
        let s = t.await??;
        total = Some(match total {
            None => s,
            Some(t) => PubStats {
                answered: t.answered + s.answered,
                first_sent: t.first_sent.min(s.first_sent),
                last_answer: t.last_answer.max(s.last_answer),
            },
        });
    }
    total.ok_or_else(|| "no publishers".into())
}

/// A plain 300-byte-on-disk event body on line `metro://claude/bench/pNN`
/// (`pad` comes from [`calibrate`]).
pub fn plain_body(publisher: usize, pad: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"line\":\"metro://claude/bench/p");
    out.extend_from_slice(format!("{:02}", publisher % 100).as_bytes());
    out.extend_from_slice(b"\",\"text\":\"");
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"\"}");
}

/// The size every stored event aims at (JSON line with its `\n`).
pub const EVENT_BYTES: usize = 300;

/// Publishes one event with an empty text on a `pNN`-shaped line and
/// returns how many `x` bytes of text make a stored entry [`EVENT_BYTES`]
/// long.
pub async fn calibrate(path: &Path) -> Result<usize, Error> {
    let mut c = Conn::connect(path).await?;
    let before = c.request(json!({"op": "stats"})).await?;
    let start = before["logBytes"]
        .as_u64()
        .ok_or("stats answer without logBytes")?;
    let a = c
        .request(
            json!({"op": "publish", "event": {"line": "metro://claude/bench/p00", "text": ""}}),
        )
        .await?;
    let offset = a["offset"]
        .as_u64()
        .ok_or("publish answer without offset")?;
    let len = offset - start;
    Ok(EVENT_BYTES.saturating_sub(len as usize))
}
