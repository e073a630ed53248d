//! A subscription that outlives its connection: `metroctl tail --follow`
//! (and a future `metroctl mcp`) read events through [`Follow`], which
//! reconnects with backoff when metrod goes away and subscribes again from
//! where it stopped — the offset just after the last event it handed out —
//! so nothing is skipped and nothing already handed out comes twice.
//!
//! One reader thread per connection turns frames into [`Input`]s on a
//! bounded channel (256 frames: a slow consumer holds the reader, and
//! metrod's outbox holds the rest); [`Stopper`]s (signals, end of stdin,
//! see [`super::stop`]) feed the same channel, so whoever waits on
//! [`Follow::next_item`] also hears that it should stop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::conn::answer;
use super::CliError;
use crate::proto::{Ack, Request, Since, Subscribe};

/// Frames buffered between a connection's reader thread and the consumer.
const CHANNEL_FRAMES: usize = 256;
/// First wait before reconnecting; doubled after each failed try up to
/// [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why the consumer was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT, SIGTERM (the signal number).
    Signal(i32),
    /// Standard input (a pipe or socket) reached end of file.
    StdinClosed,
    /// The consumer itself asked (`top` starting its subscription over).
    Asked,
}

enum Input {
    /// A frame read on the connection of generation `.0`.
    Frame(u64, Value),
    /// The connection of generation `.0` ended (`.1`: why).
    Closed(u64, String),
    Stop(StopReason),
}

/// Sends a stop into a [`Follow`] from another thread.
#[derive(Clone)]
pub struct Stopper(SyncSender<Input>);

impl Stopper {
    pub fn stop(&self, reason: StopReason) {
        let _ = self.0.send(Input::Stop(reason));
    }
}

/// What [`Follow::next_item`] hands out.
#[derive(Debug)]
pub enum Item {
    /// An event; `offset` is just after it in the log (what to ack).
    Event { offset: u64, event: Value },
    /// Retention deleted `missed` bytes this subscription had not read;
    /// delivery goes on at `offset`.
    Gap { missed: u64, offset: u64 },
    /// A subscription without `follow`, or with a `limit`, is done.
    End { offset: u64 },
    /// metrod went away; the next [`Follow::next_item`] reconnects.
    Lost { cause: String },
    /// Subscribed again after [`Item::Lost`], from `offset`.
    Resumed { offset: u64 },
    /// metrod refused an ack (the subscription goes on).
    AckRefused(CliError),
    /// A [`Stopper`] fired.
    Stop(StopReason),
}

/// The connection in use.
struct Link {
    generation: u64,
    writer: UnixStream,
    next_req: u64,
    sub_req: u64,
    sub: Option<String>,
}

impl Link {
    fn send(&mut self, request: &Request) -> Result<u64, CliError> {
        let req = self.next_req;
        self.next_req += 1;
        let mut line = super::conn::request_line(request, req)?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(CliError::Io)?;
        Ok(req)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Ends this connection's reader thread.
        let _ = self.writer.shutdown(Shutdown::Both);
    }
}

pub struct Follow {
    socket: PathBuf,
    /// The `subscribe` request.
    request: Subscribe,
    reconnect: bool,
    tx: SyncSender<Input>,
    rx: Receiver<Input>,
    /// Items [`Follow::is_idle`] found, not yet handed out.
    ready: VecDeque<Item>,
    /// An error [`Follow::is_idle`] found, handed out next.
    failed: Option<CliError>,
    link: Option<Link>,
    generation: u64,
    /// Just after the last event handed out (or where delivery started).
    position: Option<u64>,
    /// Events still to hand out when the request has a `limit`.
    remaining: Option<u64>,
    /// [`Item::Lost`] was handed out and no subscription answered since:
    /// an outage is reported once, however many tries it takes.
    lost: bool,
}

impl Follow {
    /// Connects and subscribes with `request` (a `subscribe` object). With
    /// `reconnect`, a lost connection is reported as [`Item::Lost`] and
    /// made again by the next [`Follow::next_item`]; without, it is an error.
    /// The first connection is not retried: metrod must be running.
    pub fn open(socket: &Path, request: Subscribe, reconnect: bool) -> Result<Follow, CliError> {
        let (tx, rx) = sync_channel(CHANNEL_FRAMES);
        let remaining = request.limit;
        let mut f = Follow {
            socket: socket.to_path_buf(),
            request,
            reconnect,
            tx,
            rx,
            ready: VecDeque::new(),
            failed: None,
            link: None,
            generation: 0,
            position: None,
            remaining,
            lost: false,
        };
        f.connect()?;
        Ok(f)
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(self.tx.clone())
    }

    /// The current subscription id (changes on every reconnect).
    pub fn sub(&self) -> Option<&str> {
        self.link.as_ref()?.sub.as_deref()
    }

    /// Where the next subscription would start.
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// Opens a connection and sends `subscribe`; the answer arrives as a
    /// frame. Starts at `position` once known, with the `limit` left.
    fn connect(&mut self) -> Result<(), CliError> {
        let stream = UnixStream::connect(&self.socket).map_err(|e| CliError::NotRunning {
            socket: self.socket.clone(),
            cause: e,
        })?;
        super::conn::check_peer(&stream, &self.socket)?;
        let reader = stream.try_clone().map_err(CliError::Io)?;
        self.generation += 1;
        let generation = self.generation;
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name("metroctl-follow".into())
            .spawn(move || read_frames(generation, reader, tx))
            .map_err(CliError::Io)?;
        let mut request = self.request.clone();
        if let Some(p) = self.position {
            request.since = Some(Since::Offset(p));
        }
        if let Some(n) = self.remaining {
            request.limit = Some(n);
        }
        let mut link = Link {
            generation,
            writer: stream,
            next_req: 1,
            sub_req: 0,
            sub: None,
        };
        link.sub_req = link.send(&Request::Subscribe(request))?;
        self.link = Some(link);
        Ok(())
    }

    /// Reconnects with backoff until connected again (`None`) or stopped.
    fn reconnect(&mut self) -> Result<Option<Item>, CliError> {
        let mut wait = BACKOFF_START;
        loop {
            // Wait out the backoff; only a stop cuts it short (what else
            // arrives belongs to the connection that is gone).
            let deadline = Instant::now() + wait;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match self.rx.recv_timeout(left) {
                    Ok(Input::Stop(r)) => return Ok(Some(Item::Stop(r))),
                    Ok(_) => {}
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => unreachable!("self.tx keeps it open"),
                }
            }
            match self.connect() {
                Ok(()) => return Ok(None),
                // A socket served by another user stays refused.
                Err(e @ CliError::Usage(_)) => return Err(e),
                Err(_) => {}
            }
            wait = (wait * 2).min(BACKOFF_MAX);
        }
    }

    /// True when nothing is waiting: a consumer that batches (flush and
    /// ack once per burst) does its batch work now. Inputs that hand out
    /// nothing (ack answers, frames of a closed connection) are dealt with
    /// here, so they never hold a batch back.
    pub fn is_idle(&mut self) -> bool {
        loop {
            if !self.ready.is_empty() || self.failed.is_some() {
                return false;
            }
            match self.rx.try_recv() {
                Ok(input) => match self.process(input) {
                    Ok(Some(item)) => self.ready.push_back(item),
                    Ok(None) => {}
                    Err(e) => self.failed = Some(e),
                },
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return true,
            }
        }
    }

    /// The next thing that happened; blocks.
    pub fn next_item(&mut self) -> Result<Item, CliError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if let Some(item) = self.ready.pop_front() {
            return Ok(item);
        }
        loop {
            if self.link.is_none() {
                if let Some(stop) = self.reconnect()? {
                    return Ok(stop);
                }
            }
            let Ok(input) = self.rx.recv() else {
                unreachable!("self.tx keeps the channel open")
            };
            if let Some(item) = self.process(input)? {
                return Ok(item);
            }
        }
    }

    fn process(&mut self, input: Input) -> Result<Option<Item>, CliError> {
        let generation = self.link.as_ref().map_or(0, |l| l.generation);
        match input {
            Input::Stop(r) => Ok(Some(Item::Stop(r))),
            Input::Closed(g, cause) if g == generation => {
                self.link = None;
                if !self.reconnect {
                    return Err(CliError::Protocol(format!(
                        "metrod closed the connection ({cause})"
                    )));
                }
                if self.lost {
                    return Ok(None);
                }
                self.lost = true;
                Ok(Some(Item::Lost { cause }))
            }
            Input::Frame(g, frame) if g == generation => self.handle(frame),
            // Frames of a connection that is gone.
            _ => Ok(None),
        }
    }

    fn handle(&mut self, frame: Value) -> Result<Option<Item>, CliError> {
        let Some(link) = self.link.as_mut() else {
            return Ok(None);
        };
        if frame.get("ok").is_some() {
            let req = frame.get("req").and_then(Value::as_u64);
            if req == Some(link.sub_req) {
                let a = answer(frame)?;
                link.sub = a["sub"].as_str().map(String::from);
                if self.position.is_none() {
                    self.position = a["offset"].as_u64();
                }
                if std::mem::take(&mut self.lost) {
                    return Ok(Some(Item::Resumed {
                        offset: self.position.unwrap_or(0),
                    }));
                }
            } else if req.is_none() {
                // A connection-level refusal (unauthorized, too_large).
                answer(frame)?;
            } else if let Err(e) = answer(frame) {
                return Ok(Some(Item::AckRefused(e)));
            }
            return Ok(None);
        }
        if link.sub.is_none() || frame["sub"].as_str() != link.sub.as_deref() {
            return Ok(None);
        }
        let offset = frame["offset"].as_u64().unwrap_or(0);
        if frame["gap"] == json!(true) {
            self.position = Some(offset);
            return Ok(Some(Item::Gap {
                missed: frame["missed"].as_u64().unwrap_or(0),
                offset,
            }));
        }
        if frame["end"] == json!(true) {
            return Ok(Some(Item::End { offset }));
        }
        let Value::Object(mut map) = frame else {
            return Ok(None);
        };
        let event = map.remove("event").unwrap_or(Value::Null);
        // A redelivery of what was already handed out does not move on.
        if self.position.is_none_or(|p| offset > p) {
            self.position = Some(offset);
            if let Some(n) = self.remaining.as_mut() {
                *n = n.saturating_sub(1);
            }
        }
        Ok(Some(Item::Event { offset, event }))
    }

    /// Acknowledges every event up to `offset`; the answer comes later
    /// (a refusal as [`Item::AckRefused`]). Without a connection the ack
    /// is dropped: the next subscription starts after `offset` anyway.
    pub fn ack(&mut self, offset: u64) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let Some(sub) = link.sub.clone() else {
            return;
        };
        // A failed write is a lost connection: the reader thread reports it.
        let _ = link.send(&Request::Ack(Ack { sub, offset }));
    }

    /// Acknowledges up to `offset` and waits for metrod's answer, so the
    /// cursor has moved before the caller exits. Gives up when the
    /// connection ends or a second stop arrives.
    pub fn ack_and_wait(&mut self, offset: u64) -> Result<(), CliError> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        let Some(sub) = link.sub.clone() else {
            return Ok(());
        };
        let generation = link.generation;
        let Ok(req) = link.send(&Request::Ack(Ack { sub, offset })) else {
            return Ok(());
        };
        loop {
            let Ok(input) = self.rx.recv() else {
                return Ok(());
            };
            match input {
                Input::Stop(_) => return Ok(()),
                Input::Closed(g, _) if g == generation => {
                    self.link = None;
                    return Ok(());
                }
                Input::Frame(g, f)
                    if g == generation
                        && f.get("ok").is_some()
                        && f.get("req").and_then(Value::as_u64) == Some(req) =>
                {
                    return answer(f).map(|_| ());
                }
                _ => {}
            }
        }
    }
}

/// A connection's reader thread: frames until the connection ends.
fn read_frames(generation: u64, stream: UnixStream, tx: SyncSender<Input>) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let cause = match reader.read_until(b'\n', &mut line) {
            Ok(0) => "metrod closed the connection".to_string(),
            Ok(_) => match serde_json::from_slice::<Value>(&line) {
                Ok(v) => {
                    if tx.send(Input::Frame(generation, v)).is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => format!("metrod sent a line that is not JSON: {e}"),
            },
            Err(e) => e.to_string(),
        };
        let _ = tx.send(Input::Closed(generation, cause));
        return;
    }
}
