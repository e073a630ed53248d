//! `allow`, `deny`, `allowList`: who may reach the agents through the chat
//! stations (stored in `<station>-access.json` before the answer).

use std::sync::Arc;

use serde_json::Value;

use super::OpResult;
use crate::fields;
use crate::proto::{AllowCode, AllowListQuery, DenyUser, WireError};
use crate::station::access::{normalize_code, Access};
use crate::station::{Registry, Station};

/// The running stations that keep an allowlist, or only `station`.
fn lists(stations: &Registry, station: Option<&str>) -> Result<Vec<Arc<dyn Station>>, WireError> {
    let running: Vec<Arc<dyn Station>> = stations
        .running()
        .into_iter()
        .filter(|s| s.access().is_some())
        .collect();
    match station {
        None => Ok(running),
        Some(name) => match running.into_iter().find(|s| s.name() == name) {
            Some(s) => Ok(vec![s]),
            None => match stations.why_off(name) {
                Some(Err(off)) if stations.sections().contains(&name) => Err(off),
                _ => Err(WireError::bad_request(format!(
                    "field `station`: {name:?} is not a chat station with an allowlist ({})",
                    stations.sections().join(", ")
                ))),
            },
        },
    }
}

/// The allowlist of a station [`lists`] returned.
fn access(s: &Arc<dyn Station>) -> Result<&Access, WireError> {
    s.access()
        .ok_or_else(|| WireError::internal("a station without an allowlist was listed"))
}

/// Answer: `station`, `userId`, `name` of the person admitted.
pub async fn allow(stations: Arc<Registry>, a: AllowCode) -> OpResult {
    if normalize_code(&a.code).is_empty() {
        return Err(WireError::bad_request("field `code` is empty"));
    }
    let lists = lists(&stations, a.station.as_deref())?;
    if lists.is_empty() {
        return Err(WireError::unavailable(
            "no chat station is running, so there is nobody to admit",
        ));
    }
    for st in &lists {
        let list = access(st)?;
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
pub async fn deny(stations: Arc<Registry>, d: DenyUser) -> OpResult {
    let user = d.user_id.trim();
    if user.is_empty() || user.len() > 64 || user.chars().any(char::is_control) {
        return Err(WireError::bad_request(
            "field `userId`: a platform user id (1 to 64 characters)",
        ));
    }
    let lists = match d.station.as_deref() {
        Some(station) => lists(&stations, Some(station))?,
        None => {
            let running = lists(&stations, None)?;
            match running.len() {
                0 => {
                    return Err(WireError::unavailable(
                        "no chat station is running, so there is nobody to deny",
                    ))
                }
                1 => running,
                _ => {
                    let names: Vec<&str> = running.iter().map(|s| s.name()).collect();
                    return Err(WireError::bad_request(format!(
                        "field `station`: {} run; say which one the user id belongs to",
                        names.join(" and ")
                    )));
                }
            }
        }
    };
    let mut out = fields! {};
    for st in &lists {
        let list = access(st)?;
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
pub fn list(stations: &Registry, q: AllowListQuery) -> OpResult {
    let rows: Vec<Value> = lists(stations, q.station.as_deref())?
        .iter()
        .filter_map(|s| s.access().map(Access::list))
        .collect();
    Ok(fields! { "access" => rows })
}
