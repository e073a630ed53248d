//! systemd: the listening socket from socket activation (`LISTEN_FDS`,
//! `LISTEN_PID`) and the service state through `NOTIFY_SOCKET` (`READY=1`,
//! `RELOADING=1`, `STOPPING=1`, `STATUS=`). Without systemd both are no-ops:
//! metrod binds its own socket and tells nobody.
//!
//! [`take_activation`] must run before any thread is started (it unsets the
//! `LISTEN_*` variables, and changing the environment is only sound while
//! the process has one thread); [`listen`] later turns what it took into the
//! daemon's listener.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, UnixAddr};
use sd_notify::NotifyState;
use tokio::net::UnixListener;

/// What systemd passed us: a checked listening socket, or why it is unusable.
static ACTIVATION: Mutex<Option<Result<OwnedFd, String>>> = Mutex::new(None);

/// Takes the socket systemd passed (when `LISTEN_PID` is our pid and
/// `LISTEN_FDS` at least one) and unsets `LISTEN_PID`, `LISTEN_FDS` and
/// `LISTEN_FDNAMES`, so that nothing we start inherits them. Call it first
/// thing in `main`, before the runtime starts any thread.
pub fn take_activation() {
    if std::env::var_os("LISTEN_FDS").is_none() {
        return;
    }
    // SAFETY: called from `main` before the runtime (or anything else)
    // starts a thread, so nothing reads the environment concurrently.
    let fds = unsafe {
        std::env::remove_var("LISTEN_FDNAMES");
        sd_notify::listen_fds_and_unset_env()
    };
    let taken = match fds {
        Err(e) => Err(format!("LISTEN_FDS/LISTEN_PID are not usable: {e}")),
        Ok(fds) => {
            // SAFETY: systemd hands these descriptors to this process alone;
            // nothing else here owns them.
            let mut fds: Vec<OwnedFd> = fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
            if fds.is_empty() {
                // LISTEN_PID names another process: not ours.
                return;
            }
            // Only the first is used; the others are closed here.
            EXTRA.store(fds.len() - 1, std::sync::atomic::Ordering::Relaxed);
            let fd = fds.remove(0);
            drop(fds);
            match check_listener(&fd) {
                Ok(()) => Ok(fd),
                Err(why) => Err(format!(
                    "the socket systemd passed (fd {}) {why}",
                    fd.as_raw_fd()
                )),
            }
        }
    };
    if let Ok(mut slot) = ACTIVATION.lock() {
        *slot = Some(taken);
    }
}

/// How many more sockets than the one we use systemd passed.
static EXTRA: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A passed descriptor must be a listening Unix stream socket.
fn check_listener(fd: &OwnedFd) -> Result<(), String> {
    match getsockopt(fd, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(other) => return Err(format!("is a {other:?} socket, not a stream socket")),
        Err(e) => return Err(format!("is not a socket ({e})")),
    }
    if getsockname::<UnixAddr>(fd.as_raw_fd()).is_err() {
        return Err("is not a Unix socket (ListenStream= must be a path)".into());
    }
    match getsockopt(fd, sockopt::AcceptConn) {
        Ok(true) => Ok(()),
        Ok(false) => Err("is not listening".into()),
        Err(e) => Err(format!("cannot be inspected ({e})")),
    }
}

/// The daemon's listening socket and where it is.
pub struct Served {
    pub listener: UnixListener,
    /// The socket's path: the one systemd bound, or the one we bound.
    pub path: PathBuf,
    /// True when systemd owns the socket file: metrod must then leave it in
    /// place at shutdown, so the next connection starts it again.
    pub activated: bool,
}

/// The socket systemd passed, if any (taken by [`take_activation`]), else
/// `socket` bound by [`crate::server::bind`]. Must run inside the runtime.
pub fn listen(socket: &Path) -> io::Result<Served> {
    let taken = ACTIVATION.lock().ok().and_then(|mut slot| slot.take());
    let fd = match taken {
        None => {
            return Ok(Served {
                listener: crate::server::bind(socket)?,
                path: socket.to_path_buf(),
                activated: false,
            })
        }
        Some(Err(why)) => return Err(io::Error::new(io::ErrorKind::InvalidInput, why)),
        Some(Ok(fd)) => fd,
    };
    let extra = EXTRA.load(std::sync::atomic::Ordering::Relaxed);
    if extra > 0 {
        tracing::warn!(
            "systemd passed {} sockets; using the first and closing the others",
            extra + 1
        );
    }
    let path = getsockname::<UnixAddr>(fd.as_raw_fd())
        .ok()
        .and_then(|a| a.path().map(Path::to_path_buf))
        .unwrap_or_else(|| socket.to_path_buf());
    if path != socket {
        tracing::warn!(
            "systemd passed the socket {}, not {}: clients must be pointed at it (--socket or $METRO_SOCKET)",
            path.display(),
            socket.display()
        );
    }
    tighten(&path);
    tracing::info!(
        "socket activation: serving the socket systemd passed ({})",
        path.display()
    );
    let std_listener = std::os::unix::net::UnixListener::from(fd);
    std_listener.set_nonblocking(true)?;
    Ok(Served {
        listener: UnixListener::from_std(std_listener)?,
        path,
        activated: true,
    })
}

/// systemd creates the socket with `SocketMode=` (our unit says 0600); a
/// unit edited to something looser is tightened, as metrod does with its
/// own socket. Other users would still be refused by the peer check.
fn tighten(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    if meta.file_type().is_socket() && meta.uid() == me && meta.mode() & 0o077 != 0 {
        tracing::warn!(
            "the socket systemd passed ({}) had mode {:o}; setting it to 0600 (set SocketMode=0600 in metrod.socket)",
            path.display(),
            meta.mode() & 0o777
        );
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!("cannot chmod {}: {e}", path.display());
        }
    }
}

/// Sends states to the service manager, if there is one (`NOTIFY_SOCKET`).
/// A failure is logged and otherwise ignored: the daemon works without it.
fn notify(states: &[NotifyState]) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = if target.as_encoded_bytes().first() == Some(&b'@') {
        send_abstract(&target, states)
    } else {
        sd_notify::notify(states)
    };
    if let Err(e) = sent {
        tracing::warn!(
            "cannot notify the service manager at {}: {e}",
            target.to_string_lossy()
        );
    }
}

/// `NOTIFY_SOCKET=@name`: a socket in the abstract namespace (Linux).
#[cfg(target_os = "linux")]
fn send_abstract(target: &std::ffi::OsStr, states: &[NotifyState]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let name = &target.as_encoded_bytes()[1..];
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    sock.send_to_addr(msg.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_target: &std::ffi::OsStr, _states: &[NotifyState]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// `READY=1`: startup is finished, the socket is served.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` (with `MONOTONIC_USEC`, which systemd ≥ 253 wants): a
/// reload has begun; [`ready`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}
