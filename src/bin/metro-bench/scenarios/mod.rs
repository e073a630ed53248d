//! The seven scenarios of issue 4, the Claude Code bridge (issue 13),
//! clusters (issue 18) and metro beside Redis (issue 17). Each starts its
//! own daemons on fresh
//! temp dirs and drops them (kill + remove) before it returns.

mod bridge;
mod claims;
mod cluster;
mod fanout;
mod latency;
mod memory;
mod publish;
mod redis;
mod replay;
mod startup;

use crate::report::Case;
use crate::{Ctx, Error};

/// The scenarios of a plain run.
pub const NAMES: [&str; 9] = [
    "publish", "fanout", "latency", "replay", "startup", "memory", "claims", "bridge", "cluster",
];
/// Run only when asked for (`--only`, `--redis`): needs `redis-server`.
pub const OPTIONAL: [&str; 1] = ["redis"];

pub async fn run(name: &str, ctx: &Ctx) -> Result<Vec<Case>, Error> {
    match name {
        "publish" => publish::run(ctx).await,
        "fanout" => fanout::run(ctx).await,
        "latency" => latency::run(ctx).await,
        "replay" => replay::run(ctx).await,
        "startup" => startup::run(ctx).await,
        "memory" => memory::run(ctx).await,
        "claims" => claims::run(ctx).await,
        "bridge" => bridge::run(ctx).await,
        "cluster" => cluster::run(ctx).await,
        "redis" => redis::run(ctx).await,
        _ => Err(format!("unknown scenario {name}").into()),
    }
}
