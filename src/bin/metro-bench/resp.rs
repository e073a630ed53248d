//! Redis beside metro (issue 17): a real `redis-server` from PATH on a temp
//! Unix socket, and the few pieces of RESP the bench needs to drive it with
//! its own client loops (`client::publisher`, the paced publisher, the
//! subscriber readers): a command encoder, an answer counter that never
//! allocates, and a walker over `XREAD` replies.
//!
//! The bench speaks RESP itself rather than through the `redis` crate so
//! that both systems are driven by the same code: the same tokio runtime,
//! the same pipelining window and batching, the same socket reads. Only the
//! bytes on the wire differ.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{Answers, Wire};
use crate::daemon::TempDir;
use crate::Error;

/// The stream every publish goes to (metro has one log too).
pub const STREAM: &str = "bench";

/// `redis-server` on PATH, if any.
pub fn find_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

/// A running `redis-server` on a fresh temp dir; killed and removed when
/// dropped.
pub struct Redis {
    child: Option<Child>,
    pub socket: PathBuf,
    _tmp: TempDir,
}

impl Redis {
    /// `always`: `--appendonly yes --appendfsync always` (metro's
    /// `--fsync always`); otherwise `--appendonly no` (metro's `never`).
    /// No RDB snapshots in either case.
    pub fn start(exe: &Path, always: bool, tag: &str) -> Result<Redis, Error> {
        let tmp = TempDir::new(tag)?;
        let socket = tmp.path().join("redis.sock");
        let mut cmd = Command::new(exe);
        cmd.arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(tmp.path())
            .args(["--save", "", "--daemonize", "no", "--logfile", ""])
            .arg("--appendonly")
            .arg(if always { "yes" } else { "no" });
        if always {
            cmd.args(["--appendfsync", "always"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        let mut r = Redis {
            child: Some(child),
            socket,
            _tmp: tmp,
        };
        r.wait_ready()?;
        Ok(r)
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let t0 = Instant::now();
        loop {
            if let Ok(mut s) = UnixStream::connect(&self.socket) {
                s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut buf = [0u8; 64];
                if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
                    && s.read(&mut buf)
                        .is_ok_and(|k| buf[..k].starts_with(b"+PONG"))
                {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("redis-server exited early ({status})").into());
                }
            }
            if t0.elapsed() > Duration::from_secs(20) {
                return Err("redis-server did not answer PING within 20 s".into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Appends one command as a RESP array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        arg(out, a);
    }
}

fn arg(out: &mut Vec<u8>, a: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(a);
    out.extend_from_slice(b"\r\n");
}

/// `XADD bench * line <line> text <text>`, where `text` (`len` bytes) is
/// written into `out` by `fill`: no buffer per publish.
pub fn xadd(out: &mut Vec<u8>, line: &[u8], len: usize, fill: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"*7\r\n");
    for a in [
        b"XADD".as_slice(),
        STREAM.as_bytes(),
        b"*",
        b"line",
        line,
        b"text",
    ] {
        arg(out, a);
    }
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
    fill(out);
    out.extend_from_slice(b"\r\n");
}

/// The publish of `client::plain_body` in RESP: `XADD` with the same line
/// and the same text (`pad` × `x`).
#[derive(Clone)]
pub struct Xadd {
    pub pad: usize,
}

impl Wire for Xadd {
    type Answers = RespAnswers;

    fn publish(&self, p: usize, _i: u64, out: &mut Vec<u8>) {
        let mut line = *b"metro://claude/bench/p00";
        line[22] = b'0' + (p % 100 / 10) as u8;
        line[23] = b'0' + (p % 10) as u8;
        let pad = self.pad;
        xadd(out, &line, pad, |o| o.resize(o.len() + pad, b'x'));
    }

    fn answers(&self) -> RespAnswers {
        RespAnswers::default()
    }
}

/// Counts complete top-level RESP replies; an error reply is an `Err`.
#[derive(Default)]
pub struct RespAnswers {
    pending: Vec<u8>,
}

impl Answers for RespAnswers {
    fn count(&mut self, chunk: &[u8]) -> Result<u64, Error> {
        self.pending.extend_from_slice(chunk);
        let mut at = 0;
        let mut n = 0;
        while let Some(end) = skip(&self.pending, at)? {
            at = end;
            n += 1;
        }
        self.pending.drain(..at);
        Ok(n)
    }
}

/// Where the RESP value starting at `at` ends; `None` while incomplete.
pub fn skip(b: &[u8], at: usize) -> Result<Option<usize>, Error> {
    let Some((kind, head, next)) = header(b, at)? else {
        return Ok(None);
    };
    match kind {
        b'+' | b':' => Ok(Some(next)),
        b'$' => {
            let n = number(head)?;
            if n < 0 {
                return Ok(Some(next));
            }
            let end = next + n as usize + 2;
            Ok((b.len() >= end).then_some(end))
        }
        b'*' => {
            let mut pos = next;
            for _ in 0..number(head)?.max(0) {
                match skip(b, pos)? {
                    Some(p) => pos = p,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
        _ => unreachable!("header() returns only these kinds"),
    }
}

/// The type byte, the header text and where the body starts.
type Header<'a> = (u8, &'a [u8], usize);

/// The [`Header`] of the value at `at`; `None` while its header line is
/// incomplete.
fn header(b: &[u8], at: usize) -> Result<Option<Header<'_>>, Error> {
    let Some(&kind) = b.get(at) else {
        return Ok(None);
    };
    let Some(i) = b[at + 1..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let head = &b[at + 1..at + 1 + i];
    match kind {
        b'+' | b':' | b'$' | b'*' => Ok(Some((kind, head, at + 1 + i + 2))),
        b'-' => Err(format!("redis error: {}", String::from_utf8_lossy(head)).into()),
        other => Err(format!("not a RESP reply (type byte {other:#x})").into()),
    }
}

fn number(head: &[u8]) -> Result<i64, Error> {
    std::str::from_utf8(head)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad RESP length {:?}", String::from_utf8_lossy(head)).into())
}

/// A bulk string at `at` (complete): its bytes and where the next value
/// starts.
fn bulk(b: &[u8], at: usize) -> Result<(&[u8], usize), Error> {
    match header(b, at)? {
        Some((b'$', head, next)) => {
            let n = number(head)?.max(0) as usize;
            Ok((&b[next..next + n], next + n + 2))
        }
        _ => Err("expected a bulk string in the XREAD reply".into()),
    }
}

/// An array header at `at` (complete): its length (0 for a nil array) and
/// where its first element starts.
fn array(b: &[u8], at: usize) -> Result<(usize, usize), Error> {
    match header(b, at)? {
        Some((b'*', head, next)) => Ok((number(head)?.max(0) as usize, next)),
        _ => Err("expected an array in the XREAD reply".into()),
    }
}

/// One `XREAD … STREAMS bench <id>` reply at the start of `b`: calls
/// `entry(id, text)` for each entry (`text`: the value of its `text`
/// field). Returns the bytes the reply took, or `None` while incomplete.
pub fn xread_reply(b: &[u8], mut entry: impl FnMut(&[u8], &[u8])) -> Result<Option<usize>, Error> {
    let Some(end) = skip(b, 0)? else {
        return Ok(None);
    };
    let (streams, mut pos) = array(b, 0)?;
    for _ in 0..streams {
        let (_, p) = array(b, pos)?; // [key, entries]
        let (_key, p) = bulk(b, p)?;
        let (entries, mut p) = array(b, p)?;
        for _ in 0..entries {
            let (_, q) = array(b, p)?; // [id, fields]
            let (id, q) = bulk(b, q)?;
            let (fields, mut q) = array(b, q)?;
            let mut text: &[u8] = &[];
            for _ in 0..fields / 2 {
                let (k, r) = bulk(b, q)?;
                let (v, r) = bulk(b, r)?;
                if k == b"text" {
                    text = v;
                }
                q = r;
            }
            entry(id, text);
            p = q;
        }
        pos = p;
    }
    Ok(Some(end))
}

/// `XREAD [BLOCK 0] COUNT 1024 STREAMS bench <after>`. metro hands a
/// subscriber at most 1,024 entries per read too.
pub fn xread(out: &mut Vec<u8>, after: &[u8]) {
    command(
        out,
        &[
            b"XREAD",
            b"COUNT",
            b"1024",
            b"BLOCK",
            b"0",
            b"STREAMS",
            STREAM.as_bytes(),
            after,
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_across_chunks() {
        let mut a = RespAnswers::default();
        assert_eq!(a.count(b"$15\r\n1700000000000-0\r\n$15\r\n17").unwrap(), 1);
        assert_eq!(a.count(b"00000000000-1\r\n+OK\r\n").unwrap(), 2);
        assert!(a.count(b"-ERR wrong\r\n").is_err());
    }

    #[test]
    fn xadd_is_one_seven_element_command() {
        let mut out = Vec::new();
        xadd(&mut out, b"L", 3, |o| o.extend_from_slice(b"xyz"));
        let mut want = Vec::new();
        command(
            &mut want,
            &[b"XADD", b"bench", b"*", b"line", b"L", b"text", b"xyz"],
        );
        assert_eq!(out, want);
    }

    #[test]
    fn xread_replies_are_walked() {
        let mut r = Vec::new();
        r.extend_from_slice(b"*1\r\n*2\r\n$5\r\nbench\r\n*2\r\n");
        for (id, text) in [("1-0", "t1"), ("2-0", "t22")] {
            r.extend_from_slice(format!("*2\r\n${}\r\n{id}\r\n*4\r\n", id.len()).as_bytes());
            r.extend_from_slice(b"$4\r\nline\r\n$1\r\nL\r\n$4\r\ntext\r\n");
            r.extend_from_slice(format!("${}\r\n{text}\r\n", text.len()).as_bytes());
        }
        let mut seen = Vec::new();
        let used = xread_reply(&r, |id, t| seen.push((id.to_vec(), t.to_vec())))
            .unwrap()
            .unwrap();
        assert_eq!(used, r.len());
        assert_eq!(
            seen,
            vec![
                (b"1-0".to_vec(), b"t1".to_vec()),
                (b"2-0".to_vec(), b"t22".to_vec())
            ]
        );
        assert!(xread_reply(&r[..r.len() - 3], |_, _| {}).unwrap().is_none());
    }
}
