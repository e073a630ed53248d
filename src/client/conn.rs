//! A blocking connection to metrod, for `metroctl`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::CliError;
use crate::proto::Request;

/// Refuses a socket served by anyone but this user or root (SO_PEERCRED):
/// with the socket in a shared directory, another user's listener would
/// otherwise receive what is sent (webhook secrets, messages).
pub(crate) fn check_peer<F: std::os::fd::AsFd>(stream: &F, socket: &Path) -> Result<(), CliError> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| CliError::Io(io::Error::from(e)))?;
    let me = nix::unistd::geteuid().as_raw();
    let peer = cred.uid();
    if peer != me && peer != 0 {
        return Err(CliError::Usage(format!(
            "refusing {}: it is served by uid {peer}, not by you (uid {me}) or root; \
             another user's program could read what metroctl sends. Check --socket / $METRO_SOCKET.",
            socket.display()
        )));
    }
    Ok(())
}

pub struct Connection {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_req: u64,
    pub socket: PathBuf,
}

impl Connection {
    pub fn open(socket: &Path) -> Result<Connection, CliError> {
        let stream = UnixStream::connect(socket).map_err(|e| CliError::NotRunning {
            socket: socket.to_path_buf(),
            cause: e,
        })?;
        check_peer(&stream, socket)?;
        let reader = BufReader::new(stream.try_clone().map_err(CliError::Io)?);
        Ok(Connection {
            reader,
            writer: stream,
            next_req: 1,
            socket: socket.to_path_buf(),
        })
    }

    /// Sends a request with a fresh `req`; returns that `req`.
    pub fn send(&mut self, request: &Request) -> Result<u64, CliError> {
        let req = self.next_req;
        self.next_req += 1;
        let mut line = request_line(request, req)?;
        line.push(b'\n');
        if let Err(e) = self.writer.write_all(&line) {
            // The daemon may have refused us and closed first: its reason
            // is waiting to be read.
            if let Ok(Some(frame)) = self.read() {
                answer(frame)?;
            }
            return Err(CliError::Io(e));
        }
        Ok(req)
    }

    /// Reads the next frame; `None` when the daemon closed the connection.
    pub fn read(&mut self) -> Result<Option<Value>, CliError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(CliError::Io)?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| CliError::Protocol(format!("daemon sent a line that is not JSON: {e}")))
    }

    /// True when a frame is already buffered (more output is coming at once).
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Sends a request and waits for its answer; an error answer becomes
    /// [`CliError::Daemon`].
    pub fn call(&mut self, request: &Request) -> Result<Value, CliError> {
        self.call_or_lost(request).map_err(Lost::into_error)?
    }

    /// [`Connection::call`], telling a connection that dropped before the
    /// answer ([`Lost`]) from an answer (`Ok`, which may hold an error).
    fn call_or_lost(&mut self, request: &Request) -> Result<Result<Value, CliError>, Lost> {
        let req = match self.send(request) {
            Ok(req) => req,
            Err(CliError::Io(e)) => return Err(Lost(CliError::Io(e))),
            Err(other) => return Ok(Err(other)),
        };
        loop {
            let frame = match self.read() {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    return Err(Lost(CliError::Protocol(
                        "metrod closed the connection".into(),
                    )))
                }
                Err(CliError::Io(e)) => return Err(Lost(CliError::Io(e))),
                Err(other) => return Ok(Err(other)),
            };
            if frame.get("req") == Some(&json!(req)) && frame.get("ok").is_some() {
                return Ok(answer(frame));
            }
            // Connection-level errors (unauthorized, too_large) carry no req.
            if frame.get("req").is_none() && frame["ok"] == json!(false) {
                return Ok(answer(frame));
            }
        }
    }
}

/// `request` with `req` as one JSON line, without its `\n`.
pub(crate) fn request_line(request: &Request, req: u64) -> Result<Vec<u8>, CliError> {
    serde_json::to_vec(&request.to_value(Some(&json!(req))))
        .map_err(|e| CliError::Protocol(e.to_string()))
}

/// The connection dropped before the answer came (and why).
struct Lost(CliError);

impl Lost {
    fn into_error(self) -> CliError {
        self.0
    }
}

/// How long a retry waits for metrod to take connections again.
const RECONNECT: Duration = Duration::from_secs(10);

/// A fresh idempotency key: `metroctl-` and 32 random hex digits.
pub fn new_key() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No randomness: time and pid still tell invocations apart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("metroctl-{t:x}-{}", std::process::id());
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("metroctl-{hex}")
}

/// Sends a `publish`, `send`, `edit` or `react` under an idempotency key
/// (a fresh one unless `request` has one). When the connection drops
/// before the answer, connects again (waiting up to 10 s for
/// metrod) and sends it once more with the same key: metrod answers a
/// request it already carried out with `duplicate: true`.
pub fn call_once(socket: &Path, mut request: Request) -> Result<Value, CliError> {
    let slot = match &mut request {
        // A publish may carry its key in the event (as metroctl publish's
        // JSON may): keep that one.
        Request::Publish(p) if p.event.idempotency_key.is_some() => None,
        Request::Publish(p) => Some(&mut p.idempotency_key),
        Request::Send(s) => Some(&mut s.idempotency_key),
        Request::Edit(e) => Some(&mut e.idempotency_key),
        Request::React(r) => Some(&mut r.idempotency_key),
        _ => None,
    };
    if let Some(slot) = slot.filter(|k| k.is_none()) {
        *slot = Some(new_key());
    }
    let lost = match Connection::open(socket)?.call_or_lost(&request) {
        Ok(answer) => return answer,
        Err(lost) => lost,
    };
    eprintln!(
        "metroctl: the connection to metrod dropped before the answer ({}); sending again with the same idempotency key",
        lost.0
    );
    let deadline = Instant::now() + RECONNECT;
    let mut conn = loop {
        match Connection::open(socket) {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    conn.call_or_lost(&request).map_err(Lost::into_error)?
}

/// Turns an answer frame into its fields or a [`CliError::Daemon`].
pub fn answer(frame: Value) -> Result<Value, CliError> {
    if frame["ok"] == json!(true) {
        Ok(frame)
    } else {
        Err(CliError::Daemon {
            code: frame["error"]["code"]
                .as_str()
                .unwrap_or("internal")
                .to_string(),
            message: frame["error"]["message"].as_str().unwrap_or("").to_string(),
        })
    }
}
