//! The Unix socket: binding it safely, accepting, and one task per
//! connection.

pub mod connection;
pub mod ops;

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::station::Registry;

/// Longest socket path the kernel accepts (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Binds the socket `0600`. A leftover socket file is removed (the caller
/// holds the state dir's lock, so no live daemon owns it); any other file
/// in the way is an error.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes; choose a shorter --socket",
                path.display()
            ),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // Our lock covers our state dir, not a --socket elsewhere: make
            // sure no live daemon answers there before taking the path.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} is in use by another running metrod; stop it or choose another --socket",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Create the socket with no access for others from the first instant.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections until `shutdown`; every connection runs on
/// `tracker`.
pub async fn accept_loop(
    broker: Arc<Broker>,
    stations: Arc<Registry>,
    listener: UnixListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    // EMFILE and friends: say so once, back off (50 ms doubling to 1 s)
    // instead of spinning; connections already open are served meanwhile.
    let mut backoff = std::time::Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if !backoff.is_zero() {
                        tracing::info!("accepting connections again");
                        backoff = std::time::Duration::ZERO;
                    }
                    tracker.spawn(connection::serve(
                        broker.clone(),
                        stations.clone(),
                        stream,
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    if backoff.is_zero() {
                        tracing::warn!("accept failed: {e}; backing off");
                    }
                    backoff = (backoff * 2).clamp(
                        std::time::Duration::from_millis(50),
                        std::time::Duration::from_secs(1),
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }
}
