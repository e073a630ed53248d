//! Redelivery and the give-up policy of `explicit` subscriptions: unacked
//! events whose `ackWaitMs` ran out are sent again as `redelivered`
//! frames; after `maxDeliver` deliveries an event is given up on, its
//! line's claim by the subscriber released, and a `system` event reports
//! it (a report nobody acked is not reported again).
//!
//! Must not import: `server`, `station`, `stations`.

use std::sync::Arc;

use super::state::{Due, GivenUp, SubState};
use crate::broker::outbox::Outbox;
use crate::broker::Broker;
use crate::proto;

/// Sends again, as redelivery frames, the unacked events whose `ackWaitMs`
/// has run out; returns when the next one will.
pub(super) async fn redeliver_due(
    broker: &Broker,
    st: &Arc<SubState>,
    out: &Outbox,
    sub_json: &[u8],
) -> Result<Option<tokio::time::Instant>, crate::broker::outbox::Closed> {
    let Due {
        resend: due,
        next,
        given_up,
    } = st.due();
    for g in given_up {
        report_given_up(broker, st, g).await;
    }
    if !due.is_empty() {
        let mut buf = Vec::new();
        for (e, n) in &due {
            proto::event_frame_head(&mut buf, sub_json, e.end);
            buf.extend_from_slice(&e.json);
            buf.extend_from_slice(b",\"redelivered\":");
            buf.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes());
            buf.extend_from_slice(proto::EVENT_FRAME_TAIL);
        }
        out.send(buf, None).await?;
    }
    Ok(next.map(tokio::time::Instant::from_std))
}

/// Appends a `kind: "system"` event on the line of an event nobody acked
/// after `maxDeliver` deliveries, so a router (`unclaimed`) can take the
/// conversation over.
async fn report_given_up(broker: &Broker, st: &SubState, g: GivenUp) {
    // A report nobody acknowledged is not reported again: that would feed
    // on itself.
    if &*g.entry.meta.kind == "system" {
        tracing::warn!(sub = %st.id, offset = g.entry.end, "gave up on an unacknowledged system event");
        return;
    }
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(default)]
        id: Option<String>,
    }
    let event_id = serde_json::from_slice::<Id>(&g.entry.json)
        .ok()
        .and_then(|i| i.id)
        .unwrap_or_default();
    let who = st.who();
    let secs = g.unacked_for.as_secs_f64();
    let line = g.entry.meta.line.to_string();
    let text = format!(
        "{who} left {event_id} unhandled for {secs:.1} s ({} deliveries, never acknowledged)",
        g.deliveries
    );
    tracing::warn!(sub = %st.id, "{text}");
    // The conversation must not stay stuck with an owner that does not
    // answer: release its claim, so the line is back in broadcast and an
    // `unclaimed` router sees this report.
    let mut released = false;
    if let Some(me) = &st.filter.as_ {
        let op = crate::store::claims::ClaimOp::ReleaseIfOwner {
            line: line.clone(),
            who: me.clone(),
        };
        released = matches!(
            broker.claims.apply(op).await,
            Ok(crate::store::claims::ClaimOutcome::Released(true))
        );
    }
    let event = crate::proto::Event {
        station: crate::line::station_of(&line).to_string(),
        kind: "system".into(),
        from: crate::proto::DAEMON.into(),
        to: line.clone(),
        line,
        text: Some(text),
        payload: Some(serde_json::json!({
            "reason": "maxDeliver",
            "identity": who,
            "eventId": event_id,
            "offset": g.entry.end,
            "deliveries": g.deliveries,
            "unackedMs": g.unacked_for.as_millis() as u64,
            "released": released,
        })),
        ..Default::default()
    };
    if let Err(e) = broker.log.append(event).await {
        tracing::error!("could not report an unhandled event: {e}");
    }
}
