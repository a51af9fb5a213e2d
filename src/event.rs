//! The `conversion.v1` event: one JSON object per accepted conversion
//! (docs/event.md), encoded once and handed to a sink as bytes.
#![warn(missing_docs)]

use std::sync::Arc;

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::postback::Conversion;

pub(crate) const SCHEMA: &str = "conversion.v1";

/// `,"name":`, the text before a member other than the first, made at
/// compile time (one copy per member instead of three).
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

/// A member that may be absent: `,"name":` and a JSON string, or
/// `,"name":null` in one copy.
macro_rules! opt_member {
    ($w:expr, $name:literal, $value:expr) => {
        match $value {
            Some(s) => {
                $w.raw(key!($name));
                $w.str(s);
            }
            None => $w.raw(concat!(key!($name), "null")),
        }
    };
}

/// `2026-11-21T12:00:00.123Z`: UTC with milliseconds.
const RFC3339_MILLIS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// A UUIDv7 for an event received at `at`: the id's time is the receive
/// time (no clock read of its own); the counter keeps the ids of one
/// millisecond in order, as `Uuid::now_v7` does.
pub(crate) fn event_id(at: OffsetDateTime) -> Uuid {
    static CONTEXT: std::sync::Mutex<uuid::ContextV7> =
        std::sync::Mutex::new(uuid::ContextV7::new());
    let nanos = at.unix_timestamp_nanos();
    let seconds = u64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(0);
    let subsec = nanos.rem_euclid(1_000_000_000) as u32;
    Uuid::new_v7(uuid::Timestamp::from_unix(&CONTEXT, seconds, subsec))
}

pub(crate) fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(RFC3339_MILLIS)
        .unwrap_or_default()
}

/// Where a postback came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A server-to-server postback (`/postback`).
    S2s,
    /// A browser's image or beacon (`/pixel`).
    Pixel,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::S2s => "s2s",
            Kind::Pixel => "pixel",
        }
    }
}

/// The request facts an event carries besides the parsed conversion.
pub struct Context<'a> {
    /// The source's name.
    pub source: &'a str,
    /// The endpoint it came through.
    pub kind: Kind,
    /// When the gateway received it.
    pub received_at: OffsetDateTime,
    /// Whether conversion time is the click time (when one was sent) instead of `received_at`.
    pub conversion_at_click: bool,
    /// The client's address as text (after trusted proxies).
    pub client_ip: &'a str,
    /// The `User-Agent` header, if sent.
    pub user_agent: Option<&'a str>,
}

/// An encoded event, ready for a sink.
#[derive(Debug, Clone)]
pub struct Event {
    pub(crate) event_id: Uuid,
    /// The dedup key, kept so a spooled event can rebuild the dedup window.
    pub(crate) dedup_key: u128,
    /// The message key: the tracking token, so one click's events keep their order.
    pub(crate) key: String,
    pub(crate) source: Arc<str>,
    /// The JSON object, as the message's value.
    pub payload: Vec<u8>,
}

/// Encodes the event for `conv`: one JSON object, fields in the order of
/// The event of docs/event.md, written straight into the payload (this runs once per accepted
/// postback; a serializer with a struct and formatted strings cost about
/// twice as much).
pub fn encode(
    conv: &Conversion,
    ctx: &Context<'_>,
    source: &Arc<str>,
    event_id: Uuid,
    dedup_key: u128,
) -> Event {
    let variable = conv.token.len()
        + ctx.user_agent.map_or(0, str::len)
        + conv
            .params
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>();
    let mut w = Json(Vec::with_capacity(560 + variable));
    w.raw("{\"schema\":");
    w.plain(SCHEMA);
    w.raw(key!("event_id"));
    w.plain(
        event_id
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer()),
    );
    w.raw(key!("dedup_key"));
    w.hex128(dedup_key);
    w.raw(key!("source"));
    w.str(ctx.source);
    w.raw(key!("kind"));
    w.plain(ctx.kind.as_str());
    w.raw(key!("token"));
    w.str(&conv.token);
    opt_member!(w, "amount", conv.amount_text.as_deref());
    opt_member!(w, "currency", conv.currency.as_deref());
    opt_member!(w, "txid", conv.txid.as_deref());
    opt_member!(w, "goal", conv.goal.as_deref());
    w.raw(key!("status"));
    w.plain(conv.status.as_str());
    opt_member!(w, "status_raw", conv.status_raw.as_deref());
    w.raw(key!("received_at"));
    let at = w.0.len();
    w.time(ctx.received_at);
    let received = at..w.0.len();
    w.raw(key!("conversion_time"));
    match (ctx.conversion_at_click, conv.click_time) {
        (true, Some(t)) => w.time(t),
        // The same time: its text copied, not made again.
        _ => w.0.extend_from_within(received),
    }
    w.raw(key!("click_time"));
    match conv.click_time {
        Some(t) => w.time(t),
        None => w.raw("null"),
    }
    opt_member!(w, "campaign_id", conv.campaign_id.as_deref());
    opt_member!(w, "adset_id", conv.adset_id.as_deref());
    opt_member!(w, "ad_id", conv.ad_id.as_deref());
    opt_member!(w, "placement", conv.placement.as_deref());
    w.raw(key!("client_ip"));
    w.str(ctx.client_ip);
    opt_member!(w, "user_agent", ctx.user_agent);
    w.raw(",\"params\":{");
    for (i, (k, v)) in conv.params.iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        w.str(k);
        w.raw(":");
        w.str(v);
    }
    w.raw("}}");
    Event {
        event_id,
        dedup_key,
        key: conv.token.clone().into_owned(),
        source: source.clone(),
        payload: w.0,
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A byte kept as it is in a JSON string.
const KEEP: u8 = 1;

/// For each byte, how a JSON string writes it: [`KEEP`], the letter of its
/// short escape (`\n`), or 0 for `\u00XX` (a control character without one).
/// One lookup per byte instead of a comparison for each case.
const ESCAPE: [u8; 256] = {
    let mut table = [KEEP; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = 0;
        b += 1;
    }
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table
};

/// How many bytes at the start of `bytes` a JSON string keeps as they are:
/// up to the first control character, `"` or `\\`. Eight bytes are tested
/// at once (a byte below 0x20, or equal to `"` or `\\`, gives a zero or a
/// borrow that sets its lane's top bit, and bytes of 0x80 and up never
/// do); the tail and the word that has one go byte by byte.
fn clean_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut at = 0;
    for chunk in bytes.chunks_exact(8) {
        let x = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let quote = zero_in(x ^ (ONES * u64::from(b'"')));
        let backslash = zero_in(x ^ (ONES * u64::from(b'\\')));
        if below_space | quote | backslash != 0 {
            break;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|&b| ESCAPE[usize::from(b)] != KEEP)
        .unwrap_or(bytes.len() - at)
}

/// A JSON writer for the few shapes an event has.
struct Json(Vec<u8>);

impl Json {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A string the gateway made itself (schema, ids, kinds): quoted, with
    /// nothing to escape.
    fn plain(&mut self, s: &str) {
        self.0.push(b'"');
        self.raw(s);
        self.0.push(b'"');
    }

    /// A JSON string: `"`, `\\` and control characters escaped (the short
    /// forms where JSON has them), everything else as it is, UTF-8 included.
    /// The bytes before the first one to escape are found eight at a time
    /// ([`clean_prefix`]) and copied at once; most strings have none.
    fn str(&mut self, s: &str) {
        let out = &mut self.0;
        out.push(b'"');
        let bytes = s.as_bytes();
        let mut from = 0;
        for (i, &b) in bytes.iter().enumerate().skip(clean_prefix(bytes)) {
            let short = match ESCAPE[usize::from(b)] {
                KEEP => continue,
                short => short,
            };
            out.extend_from_slice(&bytes[from..i]);
            from = i + 1;
            if short == 0 {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            } else {
                out.push(b'\\');
                out.push(short);
            }
        }
        out.extend_from_slice(&bytes[from..]);
        out.push(b'"');
    }

    /// 32 lowercase hex digits, quoted: made on the stack, copied once.
    fn hex128(&mut self, n: u128) {
        let mut buf = [b'"'; 34];
        for (pair, byte) in buf[1..33].chunks_exact_mut(2).zip(n.to_be_bytes()) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        self.0.extend_from_slice(&buf);
    }

    /// A quoted `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
    fn time(&mut self, t: OffsetDateTime) {
        let t = t.to_offset(time::UtcOffset::UTC);
        let (year, month, day) = t.to_calendar_date();
        let Ok(year) = u32::try_from(year) else {
            // Outside the four-digit years: the general formatter.
            return self.str(&format_time(t));
        };
        if year > 9999 {
            return self.str(&format_time(t));
        }
        let mut buf = *b"\"0000-00-00T00:00:00.000Z\"";
        let mut put = |at: usize, width: usize, mut v: u32| {
            for i in (at..at + width).rev() {
                buf[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(1, 4, year);
        put(6, 2, u32::from(u8::from(month)));
        put(9, 2, u32::from(day));
        put(12, 2, u32::from(t.hour()));
        put(15, 2, u32::from(t.minute()));
        put(18, 2, u32::from(t.second()));
        put(21, 3, u32::from(t.millisecond()));
        self.0.extend_from_slice(&buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postback::Status;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u32..0x80)
            .chain([0xa0, 0x2028, 0x1f600])
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        // Every byte to escape at every place of two eight-byte words and
        // their tail, among bytes that are kept (ASCII and UTF-8).
        for at in 0..19 {
            for c in ['\u{0}', '\u{1f}', '"', '\\', '\n'] {
                let mut s: String = "aé~ ÿ!#[]{}0123456".chars().take(19).collect();
                let (i, _) = s.char_indices().nth(at.min(s.chars().count() - 1)).unwrap();
                s.insert(i, c);
                cases.push(s);
            }
        }
        cases.extend([
            "".into(),
            "\"\\\"".into(),
            "\u{1}\u{1f}\u{7f}".into(),
            "ünï ✓".into(),
        ]);
        for s in cases {
            let mut w = Json(Vec::new());
            w.str(&s);
            assert_eq!(
                String::from_utf8(w.0).unwrap(),
                serde_json::to_string(&s).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn dedup_keys_are_written_as_32_hex_digits() {
        for n in [
            0,
            0xabc,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            1 << 127,
        ] {
            let mut w = Json(Vec::new());
            w.hex128(n);
            assert_eq!(String::from_utf8(w.0).unwrap(), format!("\"{n:032x}\""));
        }
    }

    #[test]
    fn times_are_written_as_the_general_formatter_writes_them() {
        use time::macros::{datetime, offset};
        for t in [
            datetime!(2026-11-21 12:00:00.123 UTC),
            datetime!(2026-11-21 12:00:00.999_999 UTC),
            datetime!(1970-01-01 00:00:00 UTC),
            datetime!(0900-02-03 04:05:06.007 UTC),
            datetime!(9999-12-31 23:59:59.999 UTC),
            datetime!(2026-01-01 01:30:00.5 +05:00).to_offset(offset!(+5)),
            datetime!(-0001-06-15 00:00:00 UTC),
        ] {
            let mut w = Json(Vec::new());
            w.time(t);
            assert_eq!(
                String::from_utf8(w.0).unwrap(),
                format!("\"{}\"", format_time(t)),
                "{t}"
            );
        }
    }

    #[test]
    fn event_ids_carry_the_receive_time_and_keep_their_order() {
        let at = time::macros::datetime!(2026-11-21 12:00:00.123 UTC);
        let ids: Vec<Uuid> = (0..100).map(|_| event_id(at)).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "in order within a millisecond"
        );
        let (secs, nanos) = ids[0].get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos / 1_000_000), (at.unix_timestamp() as u64, 123));
        assert_eq!(ids[0].get_version_num(), 7);
    }

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
            unread: Default::default(),
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
