//! What the daemon keeps on disk: the event log, the claims map, durable
//! cursors, and the in-memory index of recently seen lines.

pub mod claims;
pub mod cursors;
pub mod lines;
pub mod log;
