//! Where things live: the state dir and the socket (protocol.md).

use std::path::PathBuf;

/// `$METRO_STATE_DIR`, else `$XDG_STATE_HOME/metro`, else
/// `~/.local/state/metro`.
pub fn state_dir() -> PathBuf {
    if let Some(d) = non_empty_env("METRO_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = non_empty_env("XDG_STATE_HOME") {
        return PathBuf::from(d).join("metro");
    }
    home().join(".local/state/metro")
}

/// `$METRO_SOCKET`, else `<state dir>/metro.sock`.
pub fn socket() -> PathBuf {
    match non_empty_env("METRO_SOCKET") {
        Some(s) => PathBuf::from(s),
        None => state_dir().join("metro.sock"),
    }
}

/// `~/.cloudflared`, where cloudflared keeps its configs and credentials.
pub fn cloudflared_dir() -> PathBuf {
    home().join(".cloudflared")
}

fn home() -> PathBuf {
    non_empty_env("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
