//! The `conversion.v1` event: one JSON object per accepted conversion
//! (SPEC §7), encoded once and handed to a sink as bytes.

use std::sync::Arc;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::postback::Conversion;

pub const SCHEMA: &str = "conversion.v1";

/// `2026-11-21T12:00:00.123Z`: UTC with milliseconds.
const RFC3339_MILLIS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(RFC3339_MILLIS)
        .unwrap_or_default()
}

/// Where a postback came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S2s,
    Pixel,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::S2s => "s2s",
            Kind::Pixel => "pixel",
        }
    }
}

/// The request facts an event carries besides the parsed conversion.
pub struct Context<'a> {
    pub source: &'a str,
    pub kind: Kind,
    pub received_at: OffsetDateTime,
    /// Whether conversion time is the click time (when one was sent) instead of `received_at`.
    pub conversion_at_click: bool,
    pub client_ip: &'a str,
    pub user_agent: Option<&'a str>,
}

/// An encoded event, ready for a sink.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_id: Uuid,
    /// The dedup key, kept so a spooled event can rebuild the dedup window.
    pub dedup_key: u128,
    /// The message key: the tracking token, so one click's events keep their order.
    pub key: String,
    pub source: Arc<str>,
    pub payload: Vec<u8>,
}

#[derive(Serialize)]
struct Wire<'a> {
    schema: &'static str,
    event_id: &'a str,
    dedup_key: &'a str,
    source: &'a str,
    kind: &'static str,
    token: &'a str,
    amount: Option<&'a str>,
    currency: Option<&'a str>,
    txid: Option<&'a str>,
    goal: Option<&'a str>,
    status: &'static str,
    status_raw: Option<&'a str>,
    received_at: String,
    conversion_time: String,
    click_time: Option<String>,
    campaign_id: Option<&'a str>,
    adset_id: Option<&'a str>,
    ad_id: Option<&'a str>,
    placement: Option<&'a str>,
    client_ip: &'a str,
    user_agent: Option<&'a str>,
    params: Params<'a>,
}

/// Pass-through parameters as a JSON object, in arrival order.
struct Params<'a>(&'a [(String, String)]);

impl Serialize for Params<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Encodes the event for `conv`.
pub fn encode(
    conv: &Conversion,
    ctx: &Context<'_>,
    source: &Arc<str>,
    event_id: Uuid,
    dedup_key: u128,
) -> Event {
    let id = event_id.hyphenated().to_string();
    let dedup_hex = format!("{dedup_key:032x}");
    let received_at = format_time(ctx.received_at);
    let conversion_time = match (ctx.conversion_at_click, conv.click_time) {
        (true, Some(t)) => format_time(t),
        _ => received_at.clone(),
    };
    let wire = Wire {
        schema: SCHEMA,
        event_id: &id,
        dedup_key: &dedup_hex,
        source: ctx.source,
        kind: ctx.kind.as_str(),
        token: &conv.token,
        amount: conv.amount_text.as_deref(),
        currency: conv.currency.as_deref(),
        txid: conv.txid.as_deref(),
        goal: conv.goal.as_deref(),
        status: conv.status.as_str(),
        status_raw: conv.status_raw.as_deref(),
        received_at,
        conversion_time,
        click_time: conv.click_time.map(format_time),
        campaign_id: conv.campaign_id.as_deref(),
        adset_id: conv.adset_id.as_deref(),
        ad_id: conv.ad_id.as_deref(),
        placement: conv.placement.as_deref(),
        client_ip: ctx.client_ip,
        user_agent: ctx.user_agent,
        params: Params(&conv.params),
    };
    // Serializing plain strings and options into a Vec cannot fail.
    let payload = serde_json::to_vec(&wire).unwrap_or_default();
    Event {
        event_id,
        dedup_key,
        key: conv.token.clone(),
        source: source.clone(),
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postback::Status;

    #[test]
    fn encodes_every_field_of_the_schema() {
        let conv = Conversion {
            token: "tok\"en".into(),
            amount: Some("12.30".parse().unwrap()),
            amount_text: Some("12.30".into()),
            currency: Some("USD".into()),
            txid: None,
            goal: Some("sale".into()),
            status: Status::Pending,
            status_raw: Some("PENDING".into()),
            click_time: Some(time::macros::datetime!(2026-11-20 10:00:00 UTC)),
            campaign_id: None,
            adset_id: None,
            ad_id: None,
            placement: None,
            params: vec![("sub2".into(), "b".into()), ("sub1".into(), "a".into())],
        };
        let ctx = Context {
            source: "default",
            kind: Kind::Pixel,
            received_at: time::macros::datetime!(2026-11-21 12:00:00.123 UTC),
            conversion_at_click: false,
            client_ip: "203.0.113.7",
            user_agent: Some("curl/8"),
        };
        let id = Uuid::now_v7();
        let ev = encode(&conv, &ctx, &Arc::from("default"), id, 0xabc);
        let v: serde_json::Value = serde_json::from_slice(&ev.payload).unwrap();
        assert_eq!(v["schema"], "conversion.v1");
        assert_eq!(v["event_id"], id.to_string());
        assert_eq!(v["dedup_key"], "00000000000000000000000000000abc");
        assert_eq!(v["kind"], "pixel");
        assert_eq!(v["token"], "tok\"en");
        assert_eq!(v["amount"], "12.30");
        assert_eq!(v["txid"], serde_json::Value::Null);
        assert_eq!(v["status"], "pending");
        assert_eq!(v["status_raw"], "PENDING");
        assert_eq!(v["received_at"], "2026-11-21T12:00:00.123Z");
        assert_eq!(v["conversion_time"], "2026-11-21T12:00:00.123Z");
        assert_eq!(v["click_time"], "2026-11-20T10:00:00.000Z");
        assert_eq!(v["placement"], serde_json::Value::Null);
        assert_eq!(v["params"]["sub1"], "a");
        let text = String::from_utf8(ev.payload.clone()).unwrap();
        assert!(
            text.find("sub2").unwrap() < text.find("sub1").unwrap(),
            "params keep arrival order"
        );
        assert_eq!(v.as_object().unwrap().len(), 22);
        assert_eq!(ev.key, "tok\"en");
    }
}
