//! A real `metrod` on a fresh temp state dir: start, wait for `hello`,
//! read its RSS, and kill it and remove the dir when dropped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Error;

/// How long a daemon may take to answer its first `hello`.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// A temp directory removed (recursively) when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir, Error> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        // Short names: the socket path must stay under 108 bytes.
        let path =
            std::env::temp_dir().join(format!("metro-bench-{}-{n}-{tag}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `metrod`. Dropping it kills the process and removes the temp
/// dir (when it owns one).
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    stderr: PathBuf,
    /// Time from spawn to the first answered `hello`.
    pub startup: Duration,
    _tmp: Option<TempDir>,
}

pub struct Spec<'a> {
    pub metrod: &'a Path,
    pub fsync: &'a str,
    /// More flags for metrod (the cluster scenario's `--cluster …`).
    pub args: Vec<String>,
}

impl Daemon {
    /// A daemon on a fresh temp state dir.
    pub fn start(spec: &Spec, tag: &str) -> Result<Daemon, Error> {
        let tmp = TempDir::new(tag)?;
        let state = tmp.path().join("state");
        let mut d = Self::start_in(spec, &state)?;
        d._tmp = Some(tmp);
        Ok(d)
    }

    /// A daemon on `state` (which may already hold a log). The caller owns
    /// the directory.
    pub fn start_in(spec: &Spec, state: &Path) -> Result<Daemon, Error> {
        let socket = state.join("metro.sock");
        let stderr = state.with_extension("stderr");
        let err_file =
            std::fs::File::create(&stderr).map_err(|e| format!("{}: {e}", stderr.display()))?;
        let t0 = Instant::now();
        let child = Command::new(spec.metrod)
            .arg("--state-dir")
            .arg(state)
            .arg("--fsync")
            .arg(spec.fsync)
            .args(&spec.args)
            .env_remove("METRO_SOCKET")
            .env_remove("METRO_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", spec.metrod.display()))?;
        let mut d = Daemon {
            child: Some(child),
            socket,
            stderr,
            startup: Duration::ZERO,
            _tmp: None,
        };
        d.wait_ready(t0)?;
        Ok(d)
    }

    /// Polls the socket with `hello` until it answers.
    fn wait_ready(&mut self, t0: Instant) -> Result<(), Error> {
        loop {
            if let Ok(s) = UnixStream::connect(&self.socket) {
                s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut w = &s;
                if w.write_all(b"{\"op\":\"hello\",\"req\":0}\n").is_ok() {
                    let mut line = String::new();
                    if BufReader::new(&s).read_line(&mut line).is_ok()
                        && line.contains("\"ok\":true")
                    {
                        self.startup = t0.elapsed();
                        return Ok(());
                    }
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(
                        format!("metrod exited early ({status}): {}", self.stderr_tail()).into(),
                    );
                }
            }
            if t0.elapsed() > READY_LIMIT {
                return Err(format!(
                    "metrod did not answer hello within {READY_LIMIT:?}: {}",
                    self.stderr_tail()
                )
                .into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// VmRSS of the daemon, in KiB.
    pub fn rss_kib(&self) -> Result<u64, Error> {
        rss_kib(self.pid())
    }

    pub fn stderr_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// SIGTERM, wait (≤ 10 s), else SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = std::fs::remove_file(&self.stderr);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// VmRSS of `pid` from /proc, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, Error> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status").into())
}
