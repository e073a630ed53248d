//! What stops a following consumer cleanly: SIGINT and SIGTERM, and end of
//! file on standard input when it is a pipe or a socket (how the TypeScript
//! metro's parent processes, such as an agent's monitor tool, stopped
//! `tail`). A terminal, `/dev/null` or a regular file as stdin never stops
//! it, so `nohup` and a null stdin keep working. Both feed a
//! [`Stopper`], so the consumer flushes and acks before it exits.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use super::follow::{StopReason, Stopper};
use super::CliError;

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts from
/// now on; [`watch_signals`] then receives them. Call it first, on the
/// main thread.
pub fn block_signals() -> Result<SigSet, CliError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| CliError::Io(e.into()))?;
    Ok(set)
}

/// Turns every signal of `set` (blocked by [`block_signals`]) into a stop.
pub fn watch_signals(set: SigSet, stopper: Stopper) -> Result<(), CliError> {
    std::thread::Builder::new()
        .name("metroctl-signals".into())
        .spawn(move || {
            while let Ok(sig) = set.wait() {
                stopper.stop(StopReason::Signal(sig as i32));
            }
        })
        .map(|_| ())
        .map_err(CliError::Io)
}

/// True when stdin is a pipe or a socket (its end of file means "stop").
pub fn stdin_is_a_stream() -> bool {
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .map(|m| m.file_type().is_fifo() || m.file_type().is_socket())
        .unwrap_or(false)
}

/// When stdin is a pipe or a socket, stops at its end of file (what it
/// carries is read and dropped).
pub fn watch_stdin(stopper: Stopper) -> Result<(), CliError> {
    if !stdin_is_a_stream() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("metroctl-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            stopper.stop(StopReason::StdinClosed);
        })
        .map(|_| ())
        .map_err(CliError::Io)
}
