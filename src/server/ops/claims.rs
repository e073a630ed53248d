//! `claim`, `release`, `claims`. A local line cannot be claimed by another
//! identity (`conflict`); ignored claims are listed apart (`ignored`).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::OpResult;
use crate::broker::Broker;
use crate::proto::{Claim, ErrorCode, Release, WireError};
use crate::station::Registry;
use crate::store::claims::{ClaimOp, ClaimOutcome};
use crate::{fields, line};

fn claim_error(why: String) -> WireError {
    WireError::internal(format!("claims were not changed: {why}"))
}

pub async fn claim(broker: Arc<Broker>, stations: Arc<Registry>, conn: u64, c: Claim) -> OpResult {
    let line = line::line(&c.line)
        .and_then(|l| stations.check_line(&l).map(|()| l))
        .map_err(|e| WireError::bad_request(format!("field `line`: {e}")))?;
    let who = line::identity(&c.as_)
        .map_err(|e| WireError::bad_request(format!("field `as`: {e}")))?
        .ok_or_else(|| {
            WireError::bad_request(format!(
                "field `as`: {} means no identity, and a claim needs one",
                line::NO_IDENTITY
            ))
        })?;
    let op = ClaimOp::Claim {
        line: line.clone(),
        who,
        if_free: c.if_free.unwrap_or(false),
        ephemeral: c.ephemeral.unwrap_or(false).then_some(conn),
    };
    match broker.claims.apply(op).await.map_err(claim_error)? {
        ClaimOutcome::Claimed { owner, previous } => Ok(fields! {
            "line" => line,
            "owner" => owner,
            "previous" => previous,
            "ephemeral" => c.ephemeral.unwrap_or(false),
        }),
        ClaimOutcome::Conflict { owner } => {
            let why = if broker.platforms.is_local(&line) {
                format!(
                    "{line} is a local line: it belongs to the agent it names, and no other identity may claim it (a message sent to it reaches that agent directly)"
                )
            } else {
                format!("{line} is owned by {owner}")
            };
            Err(WireError::new(ErrorCode::Conflict, why)
                .with("owner", owner)
                .with("line", line))
        }
        other => Err(WireError::internal(format!(
            "unexpected claim outcome {other:?}"
        ))),
    }
}

pub async fn release(broker: Arc<Broker>, r: Release) -> OpResult {
    let line =
        line::uri(&r.line).map_err(|e| WireError::bad_request(format!("field `line`: {e}")))?;
    match broker
        .claims
        .apply(ClaimOp::Release { line: line.clone() })
        .await
        .map_err(claim_error)?
    {
        ClaimOutcome::Released(released) => Ok(fields! { "line" => line, "released" => released }),
        other => Err(WireError::internal(format!(
            "unexpected claim outcome {other:?}"
        ))),
    }
}

pub fn list(broker: &Broker) -> OpResult {
    let snap = broker.claims.snapshot();
    let mut claims = Map::new();
    let mut ephemeral = Vec::new();
    for (line, owner) in snap.iter_sorted() {
        claims.insert(line.to_string(), Value::String(owner.who.clone()));
        if owner.ephemeral.is_some() {
            ephemeral.push(Value::String(line.to_string()));
        }
    }
    // Claims of local lines by other identities, from an older claims.json:
    // not in force, listed so they can be released.
    let mut ignored = Map::new();
    for (line, who) in snap.ignored() {
        ignored.insert(
            line.to_string(),
            serde_json::json!({
                "owner": who,
                "note": format!("local line: it belongs to the agent it names, so this claim by {who} is ignored; `metroctl release {line}` removes it"),
            }),
        );
    }
    Ok(fields! { "claims" => claims, "ephemeral" => ephemeral, "ignored" => ignored })
}
