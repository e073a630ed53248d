//! One client connection: framing, the request loop, the writer task, and
//! cleanup when the client goes away.
//!
//! Requests are read line by line and dispatched in order; an op that has
//! to wait (a publish waiting for its batch to be durable, a claim waiting
//! for `claims.json`) is parked in a set of in-flight futures so the next
//! request is read meanwhile, and its answer goes out when it is ready
//! (clients correlate by `req`). At most [`MAX_IN_FLIGHT`] requests are
//! parked; past that the connection stops reading until one finishes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;

use super::ops::{self, Reply};
use crate::broker::outbox::{Closed, Closer, Outbox, Outgoing};
use crate::broker::subscription::SubState;
use crate::broker::Broker;
use crate::proto::{error_frame, ErrorCode, WireError};
use crate::station::Registry;
use crate::store::claims::ClaimOp;

/// Requests of one connection waiting for their answers at once.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Most bytes gathered into one socket write.
const WRITE_COALESCE: usize = 256 << 10;
/// Most bytes of ready answers gathered into one queued write.
const ANSWER_COALESCE: usize = 16 << 10;
/// Most publishes of one read appended as one group.
const GROUP: usize = 64;

/// Splits the input on `\n` (a trailing `\r` is dropped). A line longer than
/// the limit is an error (the connection is then closed); an unterminated
/// line at end of input is discarded, never executed.
pub struct RequestCodec {
    max: usize,
    scanned: usize,
}

#[derive(Debug)]
pub enum CodecError {
    TooLarge,
    Io(std::io::Error),
}

impl From<std::io::Error> for CodecError {
    fn from(e: std::io::Error) -> Self {
        CodecError::Io(e)
    }
}

impl RequestCodec {
    pub fn new(max: usize) -> Self {
        RequestCodec { max, scanned: 0 }
    }
}

impl Decoder for RequestCodec {
    type Item = BytesMut;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        match memchr::memchr(b'\n', &buf[self.scanned..]) {
            Some(i) => {
                let at = self.scanned + i;
                self.scanned = 0;
                if at > self.max {
                    return Err(CodecError::TooLarge);
                }
                let mut line = buf.split_to(at + 1);
                line.truncate(at);
                if line.last() == Some(&b'\r') {
                    line.truncate(at - 1);
                }
                Ok(Some(line))
            }
            None => {
                self.scanned = buf.len();
                if buf.len() > self.max {
                    return Err(CodecError::TooLarge);
                }
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None => {
                // The client left in the middle of a line: drop it.
                buf.advance(buf.len());
                self.scanned = 0;
                Ok(None)
            }
        }
    }
}

/// A subscription as its connection sees it.
pub struct SubHandle {
    pub state: Arc<SubState>,
    pub cancel: CancellationToken,
}

/// What the op handlers may use of their connection.
pub struct Conn {
    pub id: u64,
    pub broker: Arc<Broker>,
    /// The stations, for the ops that go to one.
    pub stations: Arc<Registry>,
    pub out: Outbox,
    /// The socket's write half, shared with the writer task: an answer that
    /// finds nothing queued is written at once by the read loop (see
    /// [`answer`]).
    wr: Arc<OwnedWriteHalf>,
    /// Cancelled when the connection ends or the daemon stops.
    pub stop: CancellationToken,
    subs: Mutex<HashMap<String, SubHandle>>,
    next_sub: AtomicU64,
    tasks: tokio_util::task::TaskTracker,
}

impl Conn {
    pub fn next_sub_id(&self) -> String {
        format!("s{}", self.next_sub.fetch_add(1, Ordering::Relaxed))
    }

    pub fn add_sub(&self, st: Arc<SubState>, cancel: CancellationToken) {
        self.broker.register(st.clone());
        if let Ok(mut subs) = self.subs.lock() {
            subs.insert(st.id.clone(), SubHandle { state: st, cancel });
        }
    }

    /// Subscriptions this connection holds now.
    pub fn sub_count(&self) -> usize {
        self.subs.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn sub(&self, id: &str) -> Option<Arc<SubState>> {
        self.subs.lock().ok()?.get(id).map(|h| h.state.clone())
    }

    /// Forgets a subscription and stops its task.
    pub fn remove_sub(&self, id: &str) -> bool {
        let handle = self.subs.lock().ok().and_then(|mut s| s.remove(id));
        self.broker.unregister(self.id, id);
        match handle {
            Some(h) => {
                h.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Runs a subscription task on this connection.
    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(fut);
    }

    /// At end of input: stop what could only go on with the client's help
    /// (following, and explicit acks that can no longer arrive); let finite
    /// auto/none subscriptions run to their `end`.
    fn cancel_open_ended(&self) {
        if let Ok(subs) = self.subs.lock() {
            for h in subs.values() {
                if h.state.follow || h.state.ack == crate::proto::AckMode::Explicit {
                    h.cancel.cancel();
                }
            }
        }
    }

    fn clear_subs(&self) {
        let ids: Vec<String> = match self.subs.lock() {
            Ok(s) => s.keys().cloned().collect(),
            Err(_) => Vec::new(),
        };
        for id in ids {
            self.remove_sub(&id);
        }
    }
}

enum Ended {
    /// The client closed its side: finish what was asked, then close.
    Eof,
    /// Too large, socket error, or shutdown: close now.
    Abort,
}

/// Serves one accepted connection to the end.
pub async fn serve(
    broker: Arc<Broker>,
    stations: Arc<Registry>,
    stream: UnixStream,
    shutdown: CancellationToken,
) {
    let id = broker.next_connection_id();
    let peer_ok = match stream.peer_cred() {
        Ok(cred) => cred.uid() == nix::unistd::geteuid().as_raw(),
        Err(e) => {
            tracing::warn!(conn = id, "could not read peer credentials: {e}");
            false
        }
    };
    let (rd, wr) = stream.into_split();
    let wr = Arc::new(wr);
    let (out, rx) = Outbox::new();
    let writer = tokio::spawn(write_loop(wr.clone(), rx, out.closer()));
    if !peer_ok {
        tracing::warn!(conn = id, "refused a connection from another user");
        let err = WireError::new(
            ErrorCode::Unauthorized,
            "this metrod serves only the user that runs it",
        );
        let _ = out.send(error_frame(None, &err), None).await;
        drop(out);
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        return;
    }
    let before = broker.connections.fetch_add(1, Ordering::Relaxed);
    if before >= broker.opts.max_connections {
        broker.connections.fetch_sub(1, Ordering::Relaxed);
        tracing::warn!(conn = id, "refused a connection: {before} already open");
        let err = WireError::new(
            ErrorCode::Limit,
            format!(
                "metrod already serves {before} connections (--max-connections); close one and retry"
            ),
        );
        let _ = out.send(error_frame(None, &err), None).await;
        drop(out);
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        return;
    }
    let conn = Arc::new(Conn {
        id,
        broker: broker.clone(),
        stations,
        out,
        wr,
        stop: shutdown.child_token(),
        subs: Mutex::new(HashMap::new()),
        next_sub: AtomicU64::new(1),
        tasks: tokio_util::task::TaskTracker::new(),
    });
    let ended = read_loop(&conn, rd).await;
    match ended {
        Ended::Eof => conn.cancel_open_ended(),
        Ended::Abort => conn.stop.cancel(),
    }
    conn.tasks.close();
    tokio::select! {
        _ = conn.tasks.wait() => {}
        _ = shutdown.cancelled() => conn.stop.cancel(),
    }
    conn.clear_subs();
    conn.stop.cancel();
    if let Err(e) = broker.claims.apply(ClaimOp::DropConnection(id)).await {
        tracing::warn!(conn = id, "could not drop ephemeral claims: {e}");
    }
    broker.connections.fetch_sub(1, Ordering::Relaxed);
    let out = conn.out.clone();
    drop(conn);
    // The writer ends once every queued frame is written and the last
    // sender is gone; a peer that never reads is cut off at shutdown.
    drop(out);
    let abort = writer.abort_handle();
    tokio::select! {
        _ = writer => {}
        _ = async {
            shutdown.cancelled().await;
            // Stopping: a moment to flush what is queued, then cut off.
            tokio::time::sleep(Duration::from_millis(500)).await;
        } => abort.abort(),
    }
}

/// The connection's read half, noting whether the connection waited for
/// its client with nothing in flight: the request read after such a wait,
/// if it is the only one read, is *alone* (a client that asks one thing and
/// waits for the answer), which lets a publish commit in place under
/// `--fsync always` (see `store/log/writer.rs`).
struct Reader {
    rd: tokio::net::unix::OwnedReadHalf,
    /// Set by the read loop: nothing is in flight.
    idle: bool,
    /// A read found nothing while idle; a new connection starts so.
    waited: bool,
}

impl tokio::io::AsyncRead for Reader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.rd).poll_read(cx, buf);
        if polled.is_pending() && self.idle {
            self.waited = true;
        }
        polled
    }
}

async fn read_loop(conn: &Arc<Conn>, rd: tokio::net::unix::OwnedReadHalf) -> Ended {
    let reader = Reader {
        rd,
        idle: true,
        waited: true,
    };
    let mut frames = FramedRead::new(reader, RequestCodec::new(conn.broker.opts.max_request));
    let mut in_flight = FuturesUnordered::new();
    // Requests whose answers are in flight (a group counts each of its
    // publishes), and the ready publishes of the read being taken apart.
    let mut waiting = 0usize;
    let mut group: Vec<(Option<serde_json::Value>, Box<crate::proto::Event>)> = Vec::new();
    // One wait for the stop, not a new one (and a waiter registered and
    // removed) for every request and answer.
    let stop = conn.stop.cancelled();
    tokio::pin!(stop);
    let ended = loop {
        frames.get_mut().idle = in_flight.is_empty() && group.is_empty();
        tokio::select! {
            biased;
            _ = &mut stop => break Ended::Abort,
            Some(answer) = in_flight.next(), if !in_flight.is_empty() => {
                if send_answers(conn, answer, &mut in_flight, &mut waiting).await.is_err() {
                    break Ended::Abort;
                }
            }
            frame = frames.next(), if waiting + group.len() < MAX_IN_FLIGHT => match frame {
                None => break Ended::Eof,
                Some(Err(CodecError::TooLarge)) => {
                    let err = WireError::new(
                        ErrorCode::TooLarge,
                        format!(
                            "request line longer than {} bytes; closing the connection",
                            conn.broker.opts.max_request
                        ),
                    );
                    let _ = conn.out.send(error_frame(None, &err), None).await;
                    break Ended::Abort;
                }
                Some(Err(CodecError::Io(_))) => break Ended::Abort,
                Some(Ok(line)) => {
                    let waited = std::mem::take(&mut frames.get_mut().waited);
                    // Another complete line of this read follows.
                    let more = memchr::memchr(b'\n', frames.read_buffer()).is_some();
                    if line.iter().all(|b| b.is_ascii_whitespace()) {
                        // A blank last line of the read: nothing may wait.
                        if !more {
                            flush(conn, &mut group, &mut in_flight, &mut waiting).await;
                        }
                        continue;
                    }
                    let alone = waited && in_flight.is_empty() && group.is_empty() && !more;
                    let reply = ops::dispatch(conn, &line, alone).await;
                    if let Reply::Append(req, event) = reply {
                        group.push((req, event));
                        // The group goes to the log once the read's
                        // complete lines are taken, before any wait.
                        if !more || group.len() >= GROUP || waiting + group.len() >= MAX_IN_FLIGHT {
                            flush(conn, &mut group, &mut in_flight, &mut waiting).await;
                        }
                        continue;
                    }
                    // Any other request: the publishes before it go first.
                    flush(conn, &mut group, &mut in_flight, &mut waiting).await;
                    match reply {
                        Reply::Now(bytes) => {
                            if answer(conn, bytes).await.is_err() {
                                break Ended::Abort;
                            }
                        }
                        Reply::Later(fut) => {
                            waiting += 1;
                            in_flight.push(fut);
                        }
                        Reply::Sent | Reply::Append(..) => {}
                    }
                }
            },
        }
    };
    // Answer what was already asked.
    flush(conn, &mut group, &mut in_flight, &mut waiting).await;
    while let Some(answer) = in_flight.next().await {
        if send_answer(conn, answer).await.is_err() {
            break;
        }
    }
    ended
}

/// Queues the ready publishes of one read with the log writer as one
/// group (one message, one answer buffer), before the connection reads or
/// runs anything else: a connection's plain publishes are stored in the
/// order it sent them. Waits only while the writer's queue is full.
async fn flush(
    conn: &Conn,
    group: &mut Vec<(Option<serde_json::Value>, Box<crate::proto::Event>)>,
    in_flight: &mut FuturesUnordered<ops::Pending>,
    waiting: &mut usize,
) {
    if group.is_empty() {
        return;
    }
    *waiting += group.len();
    let (reqs, events): (Vec<_>, Vec<_>) = std::mem::take(group).into_iter().unzip();
    let queued = conn.broker.log.send_group(events).await;
    in_flight.push(ops::group_answers(reqs, queued));
}

/// Queues `first` and every other answer that is ready now as one write
/// (a batch commit answers many publishes of a connection at once): one
/// budget wait and one wake of the writer task instead of one per answer.
/// An answer in room of its own goes alone, in its order. `waiting` drops
/// by the requests answered.
async fn send_answers<F>(
    conn: &Conn,
    first: ops::Answer,
    in_flight: &mut FuturesUnordered<F>,
    waiting: &mut usize,
) -> Result<(), Closed>
where
    F: std::future::Future<Output = ops::Answer> + Unpin,
{
    *waiting = waiting.saturating_sub(first.requests);
    if first.room.is_some() {
        return send_answer(conn, first).await;
    }
    let mut bytes = first.bytes;
    while bytes.len() < ANSWER_COALESCE {
        // Polled without waiting: what is not ready is polled again (with
        // the loop's own waker) by the caller's next `select!`.
        match in_flight.next().now_or_never() {
            Some(Some(next)) => {
                *waiting = waiting.saturating_sub(next.requests);
                if next.room.is_some() {
                    conn.out.send(std::mem::take(&mut bytes), None).await?;
                    send_answer(conn, next).await?;
                } else {
                    bytes.extend_from_slice(&next.bytes);
                }
            }
            _ => break,
        }
    }
    if bytes.is_empty() {
        return Ok(());
    }
    answer(conn, bytes).await
}

/// Sends an answer: written to the socket at once when nothing of the
/// connection is queued or being written (a client that asks and waits:
/// no hand-off to the writer task and back), else queued behind what is.
/// Whatever the socket does not take at once is queued first, in the room
/// of the whole budget, so nothing can pass it.
async fn answer(conn: &Conn, mut bytes: Vec<u8>) -> Result<(), Closed> {
    let Some(room) = conn.out.try_reserve_all() else {
        return conn.out.send(bytes, None).await;
    };
    match conn.wr.try_write(&bytes) {
        Ok(n) if n == bytes.len() => Ok(()),
        Ok(n) => {
            bytes.drain(..n);
            conn.out.send_in(bytes, room)
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => conn.out.send_in(bytes, room),
        Err(_) => {
            // The peer is gone: as when the writer task finds so.
            conn.out.closer().close();
            Err(Closed)
        }
    }
}

/// Queues an op's answer, in the room it reserved if it did.
async fn send_answer(conn: &Conn, answer: ops::Answer) -> Result<(), Closed> {
    match answer.room {
        Some(room) => conn.out.send_in(answer.bytes, room),
        None => conn.out.send(answer.bytes, None).await,
    }
}

/// Writes all of `buf` through a shared write half.
async fn write_all(wr: &OwnedWriteHalf, buf: &[u8]) -> std::io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match wr.try_write(&buf[at..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wr.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_loop(
    wr: Arc<OwnedWriteHalf>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    closer: Closer,
) {
    let mut group: Vec<Outgoing> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    'outer: while let Some(first) = rx.recv().await {
        let mut size = first.bytes.len();
        group.push(first);
        while size < WRITE_COALESCE {
            match rx.try_recv() {
                Ok(o) => {
                    size += o.bytes.len();
                    group.push(o);
                }
                Err(_) => break,
            }
        }
        let res = if group.len() == 1 {
            write_all(&wr, &group[0].bytes).await
        } else {
            buf.clear();
            for o in &group {
                buf.extend_from_slice(&o.bytes);
            }
            write_all(&wr, &buf).await
        };
        if res.is_err() {
            break 'outer;
        }
        for o in group.drain(..) {
            if let Some((sub, offset)) = &o.advance {
                sub.written(*offset);
            }
        }
        if buf.capacity() > 1 << 20 {
            buf = Vec::with_capacity(64 << 10);
        }
    }
    closer.close();
    // The connection may still hold the write half (the read loop's
    // answers): the socket's write side is shut when the last one goes.
    if let Ok(mut wr) = Arc::try_unwrap(wr) {
        let _ = wr.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Polls one read without waiting: `None` when it would wait.
    fn read_now(r: &mut Reader) -> Option<usize> {
        let mut buf = [0u8; 64];
        r.read(&mut buf).now_or_never().map(|n| n.unwrap())
    }

    #[tokio::test]
    async fn a_wait_counts_only_with_nothing_in_flight() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (rd, _wr) = a.into_split();
        let mut r = Reader {
            rd,
            idle: false,
            waited: false,
        };
        // Requests in flight: waiting for more input is no sign of a lone
        // request.
        assert_eq!(read_now(&mut r), None);
        assert!(!r.waited);
        // Nothing in flight: it is.
        r.idle = true;
        assert_eq!(read_now(&mut r), None);
        assert!(r.waited);
        // Input already there is read without a wait.
        r.waited = false;
        b.write_all(b"{\"op\":\"hello\"}\n").await.unwrap();
        r.rd.readable().await.unwrap();
        assert_eq!(read_now(&mut r), Some(15));
        assert!(!r.waited);
    }
}
