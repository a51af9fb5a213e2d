//! From a parsed conversion to its outcome: the dedup claim, the event, the
//! sink, then commit or release. What waits (for another request's claim, for
//! Kafka) owns its data, so the caller can let the request go before the wait.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;
use tracing::warn;

use super::detach::Detachable;
use super::{App, Outcome, Request};
use crate::dedup::{Claim, KeyParts, Reservation, Route};
use crate::event::{self, Context, Event, Kind};
use crate::postback::Conversion;
use crate::rejection::Rejection;
use crate::source::Source;
use crate::tasks;

/// A conversion whose dedup key this request claimed, or will wait for.
pub(super) struct Claimed {
    source: Arc<Source>,
    state: State,
}

enum State {
    /// The key was free: it is reserved, the event encoded.
    Reserved {
        reservation: Reservation,
        event: Event,
        campaign: Option<Box<str>>,
    },
    /// Another request holds the key in flight (rare); boxed, so that this
    /// case does not enlarge every request's future.
    Waiting(Box<Waiting>),
}

/// What the event is made of, owned, while another request's claim is awaited.
struct Waiting {
    route: Route,
    key: u128,
    conv: Conversion<'static>,
    user_agent: Option<String>,
    client: IpAddr,
    kind: Kind,
    received_at: OffsetDateTime,
}

/// Claims the conversion's dedup key and, when the key is free, encodes its
/// event. `Err` is the outcome when there is nothing to deliver: a duplicate.
pub(super) fn claim(
    app: &App,
    kind: Kind,
    source: Arc<Source>,
    conv: Conversion<'_>,
    client: IpAddr,
    req: &Request<'_>,
) -> Result<Claimed, Outcome> {
    let fields = &source.dedup_fields;
    let key = app.dedup.key(&KeyParts {
        source: &source.name,
        token: &conv.token,
        txid: conv.txid.as_deref().filter(|_| fields.txid),
        goal: conv.goal.as_deref().filter(|_| fields.goal),
        status: if fields.status {
            conv.dedup_status()
        } else {
            ""
        },
        // No amount is one value too: "none" against "12.50".
        amount: fields
            .amount
            .then(|| conv.amount_text.as_deref().unwrap_or("")),
    });
    let route = app.dedup.route(
        &source.name,
        source.is_keyed(),
        source.pixel_key_count() > 0,
        kind == Kind::Pixel,
    );
    let state = match route.try_claim(key) {
        Some(claim) => State::Reserved {
            reservation: settle(app, claim, &source)?,
            event: encode(
                &conv,
                &source,
                kind,
                req.received_at,
                client,
                req.user_agent.as_deref(),
                key,
            ),
            campaign: conv.campaign_id.as_deref().map(Box::from),
        },
        None => State::Waiting(Box::new(Waiting {
            route,
            key,
            conv: conv.into_owned(),
            user_agent: req.user_agent.as_deref().map(str::to_owned),
            client,
            kind,
            received_at: req.received_at,
        })),
    };
    Ok(Claimed { source, state })
}

/// Waits for the key when another request held it, makes the event durable,
/// and commits the key, or releases it when the event cannot be made durable.
pub(super) async fn finish(app: &App, claimed: Claimed) -> Outcome {
    let Claimed { source, state } = claimed;
    let (reservation, event, campaign) = match state {
        State::Reserved {
            reservation,
            event,
            campaign,
        } => (reservation, event, campaign),
        State::Waiting(w) => {
            // Boxed: the wait's state would otherwise enlarge every request's future.
            let claim = Box::pin(w.route.reserve(w.key, app.delivery_wait)).await;
            let reservation = match settle(app, claim, &source) {
                Ok(r) => r,
                Err(outcome) => return outcome,
            };
            let event = encode(
                &w.conv,
                &source,
                w.kind,
                w.received_at,
                w.client,
                w.user_agent.as_deref(),
                w.key,
            );
            (reservation, event, w.conv.campaign_id.map(Box::from))
        }
    };
    let event_id = event.event_id;
    // Delivery runs to its end even if the client hangs up (then in a task of
    // the crate's owner): an event Kafka may still acknowledge must be
    // committed, or its retry would count it twice.
    let sink = app.sink.clone();
    let delivered = Detachable::new(&app.tasks, tasks::DETACHED_DELIVERY, async move {
        match sink.deliver(&event).await {
            Ok(()) => {
                reservation.commit(event.event_id);
                Ok(())
            }
            Err(e) => {
                drop(reservation);
                Err(e)
            }
        }
    })
    .await;
    match delivered {
        Ok(()) => {
            source.count_accepted(app.metrics());
            if let Some(campaign) = campaign.as_deref() {
                app.campaigns
                    .observe(&source.platform, &source.name, campaign, app.metrics());
            }
            Outcome::Accepted(event_id)
        }
        Err(e) => {
            if log_allowed() {
                warn!(source = %source.name, error = %e, "Cannot make a postback durable; answering 503.");
            }
            Outcome::Rejected(Rejection::Unavailable)
        }
    }
}

/// The reservation when the key is this request's; otherwise the outcome.
fn settle(app: &App, claim: Claim, source: &Source) -> Result<Reservation, Outcome> {
    match claim {
        Claim::Reserved(r) => Ok(r),
        Claim::Duplicate(first) => {
            source.count_duplicate(app.metrics());
            Err(Outcome::Duplicate(Some(first)))
        }
        Claim::Busy => Err(Outcome::Rejected(Rejection::Unavailable)),
    }
}

/// The conversion.v1 event, under a new event id.
fn encode(
    conv: &Conversion<'_>,
    source: &Source,
    kind: Kind,
    received_at: OffsetDateTime,
    client: IpAddr,
    user_agent: Option<&str>,
    key: u128,
) -> Event {
    let mut ip_buf = [0u8; 48];
    let ctx = Context {
        source: &source.name,
        kind,
        received_at,
        conversion_at_click: source.conversion_at_click,
        client_ip: ip_text(client, &mut ip_buf),
        user_agent,
    };
    event::encode(conv, &ctx, &source.name, event::event_id(received_at), key)
}

/// An address as text in `buf`, without the formatting machinery for IPv4.
fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &str {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut at = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[at] = b'.';
                    at += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let first = match octet {
                    100.. => 0,
                    10.. => 1,
                    _ => 2,
                };
                for &d in &digits[first..] {
                    buf[at] = b'0' + d;
                    at += 1;
                }
            }
            at
        }
        IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // 45 bytes hold the longest IPv6 text.
            let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{ip}"));
            cursor.position() as usize
        }
    };
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// At most one warning a second for failures that come in floods (a Kafka outage).
fn log_allowed() -> bool {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    LAST.swap(now, Ordering::Relaxed) != now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_their_display_form() {
        let mut buf = [0u8; 48];
        for ip in [
            "0.0.0.0",
            "203.0.113.7",
            "10.200.9.255",
            "1.20.100.0",
            "::1",
            "2001:db8::ff00:42:8329",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
        }
    }
}
