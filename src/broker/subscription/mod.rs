//! One subscription: its state ([`state`]: position, cursor, unacked
//! queue), the task that feeds it ([`task`]) and its redelivery and
//! give-up policy ([`redelivery`]).
//!
//! Must not import: `server`, `station`, `stations`.

mod redelivery;
mod state;
mod task;

pub use state::{GivenUp, SubSnapshot, SubState};
pub use task::{run, Stopped};
