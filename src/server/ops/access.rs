//! `allow`, `deny`, `allowList`: who may reach the agents through the chat
//! stations (stored in `<station>-access.json` before the answer).

use std::sync::Arc;

use serde_json::Value;

use super::OpResult;
use crate::broker::Broker;
use crate::fields;
use crate::proto::{AllowCode, AllowListQuery, DenyUser, WireError};
use crate::stations::access::{normalize_code, Access};

/// The running chat stations' access lists, or only `station`'s.
fn lists<'a>(broker: &'a Broker, station: Option<&str>) -> Result<Vec<&'a Access>, WireError> {
    let running: Vec<&Access> = broker
        .telegram
        .iter()
        .map(|t| &t.access)
        .chain(broker.discord.iter().map(|d| &d.access))
        .collect();
    match station {
        None => Ok(running),
        Some(name) => match running.into_iter().find(|a| a.station() == name) {
            Some(a) => Ok(vec![a]),
            None if name == "telegram" || name == "discord" => {
                Err(crate::stations::unavailable(name))
            }
            None => Err(WireError::bad_request(format!(
                "field `station`: {name:?} is not a chat station with an allowlist (telegram, discord)"
            ))),
        },
    }
}

/// Answer: `station`, `userId`, `name` of the person admitted.
pub async fn allow(broker: Arc<Broker>, a: AllowCode) -> OpResult {
    if normalize_code(&a.code).is_empty() {
        return Err(WireError::bad_request("field `code` is empty"));
    }
    let lists = lists(&broker, a.station.as_deref())?;
    if lists.is_empty() {
        return Err(WireError::unavailable(
            "no chat station is running, so there is nobody to admit",
        ));
    }
    for list in lists {
        if let Some(p) = list.allow_code(&a.code).await? {
            tracing::info!(
                "{}: admitted user {} ({:?}) with a pairing code",
                list.station(),
                p.user_id,
                p.name
            );
            return Ok(fields! {
                "station" => list.station(),
                "userId" => p.user_id,
                "name" => p.name,
            });
        }
    }
    Err(WireError::not_found(format!(
        "no pairing code {:?} is waiting: it is mistyped, already used, or older than an hour",
        a.code
    )))
}

/// Answer: `station`, `userId`, `denied` (true), `wasAllowed` (they had
/// been admitted with a code).
pub async fn deny(broker: Arc<Broker>, d: DenyUser) -> OpResult {
    let user = d.user_id.trim();
    if user.is_empty() || user.len() > 64 || user.chars().any(char::is_control) {
        return Err(WireError::bad_request(
            "field `userId`: a platform user id (1 to 64 characters)",
        ));
    }
    let lists = match d.station.as_deref() {
        Some(station) => lists(&broker, Some(station))?,
        None => {
            let running = lists(&broker, None)?;
            match running.len() {
                0 => {
                    return Err(WireError::unavailable(
                        "no chat station is running, so there is nobody to deny",
                    ))
                }
                1 => running,
                _ => {
                    return Err(WireError::bad_request(
                        "field `station`: telegram and discord both run; say which one the user id belongs to",
                    ))
                }
            }
        }
    };
    let mut out = fields! {};
    for list in lists {
        let was = list.deny(user).await?;
        tracing::info!("{}: denied user {user}", list.station());
        out = fields! {
            "station" => list.station(),
            "userId" => user,
            "denied" => true,
            "wasAllowed" => was,
        };
    }
    Ok(out)
}

/// Answer: `access`, one row per chat station: `station`, `everyone`,
/// `config` (ids from the config), `allowed`, `denied`, `pending` (never
/// the codes).
pub fn list(broker: &Broker, q: AllowListQuery) -> OpResult {
    let rows: Vec<Value> = lists(broker, q.station.as_deref())?
        .into_iter()
        .map(Access::list)
        .collect();
    Ok(fields! { "access" => rows })
}
