//! A blocking connection to metrod, for `metroctl`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::CliError;

/// Refuses a socket served by anyone but this user or root (SO_PEERCRED):
/// with the socket in a shared directory, another user's listener would
/// otherwise receive what is sent (webhook secrets, messages).
fn check_peer(stream: &UnixStream, socket: &Path) -> Result<(), CliError> {
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

    /// Sends a request object with a fresh `req`; returns that `req`.
    pub fn send(&mut self, mut request: Value) -> Result<u64, CliError> {
        let req = self.next_req;
        self.next_req += 1;
        request["req"] = json!(req);
        let mut line =
            serde_json::to_vec(&request).map_err(|e| CliError::Io(io::Error::other(e)))?;
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
    pub fn call(&mut self, request: Value) -> Result<Value, CliError> {
        let req = self.send(request)?;
        loop {
            let Some(frame) = self.read()? else {
                return Err(CliError::Protocol("metrod closed the connection".into()));
            };
            if frame.get("req") == Some(&json!(req)) && frame.get("ok").is_some() {
                return answer(frame);
            }
            // Connection-level errors (unauthorized, too_large) carry no req.
            if frame.get("req").is_none() && frame["ok"] == json!(false) {
                return answer(frame);
            }
        }
    }
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
