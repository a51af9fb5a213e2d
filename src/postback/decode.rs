//! Turns a query string, a form body or a JSON body into [`Params`]: decoded
//! key/value pairs, query and body merged, in arrival order. A JSON body is a
//! flat object, or for a source that reads nested bodies (Branch's webhooks),
//! an object whose nested objects become dotted paths (`event_data.revenue`).
//!
//! Invariants: every key is unique and non-empty, every key and value is UTF-8 that
//! was percent-decoded exactly once. A failed `add_*` call leaves `Params` as it was.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::postback::reason::Reason;

/// The deepest object a nested JSON body may hold (the body's own object is 1):
/// Branch's default body nests two levels; deeper is `bad_body`.
const MAX_JSON_DEPTH: usize = 4;

/// Up to this many pairs, a duplicate check is a linear scan (no hashing, no extra
/// key copies); past it an index keeps a hostile 16 KiB `a&b&c&...` input linear.
const LINEAR_SCAN_MAX: usize = 16;

/// What a byte is to splitting a query or form body and decoding it.
#[derive(Clone, Copy)]
enum UrlByte {
    Plain,
    Amp,
    Eq,
    Percent,
    Plus,
}

/// [`UrlByte`] of every byte: one lookup per byte of the input.
const URL_CLASS: [UrlByte; 256] = {
    let mut table = [UrlByte::Plain; 256];
    table[b'&' as usize] = UrlByte::Amp;
    table[b'=' as usize] = UrlByte::Eq;
    table[b'%' as usize] = UrlByte::Percent;
    table[b'+' as usize] = UrlByte::Plus;
    table
};

/// A pair of a query or form body, as [`UrlPairs`] found it.
struct Pair {
    /// Where it starts in the input.
    start: usize,
    /// Where it ends (at the next '&' or the input's end).
    end: usize,
    /// Where its first '=' is, if it has one.
    eq: Option<usize>,
    /// Whether its name, then its value, has anything to decode.
    escaped: [bool; 2],
}

impl Pair {
    /// Where its name is in the input: all of it without an '='.
    fn name(&self) -> std::ops::Range<usize> {
        self.start..self.eq.unwrap_or(self.end)
    }

    /// Where its value is: after the first '=', empty without one.
    fn value(&self) -> std::ops::Range<usize> {
        self.eq.map_or(self.end, |eq| eq + 1)..self.end
    }
}

/// The pairs of a query or form body, in order, each found with its first
/// '=' and whether either half has a `%` (or a `+` read as a space) in one
/// pass over a table of byte classes. Only '&' separates pairs: ';' was once
/// allowed by HTML 4 but is ordinary data in every sender's template today,
/// and tokens may contain it. Empty input is one empty pair, as splitting
/// it would give.
struct UrlPairs<'a> {
    raw: &'a [u8],
    /// Where the next pair starts; past the end once the last was given.
    at: usize,
    plus_as_space: bool,
}

impl<'a> UrlPairs<'a> {
    fn new(raw: &'a [u8], plus_as_space: bool) -> UrlPairs<'a> {
        UrlPairs {
            raw,
            at: 0,
            plus_as_space,
        }
    }
}

impl Iterator for UrlPairs<'_> {
    type Item = Pair;

    fn next(&mut self) -> Option<Pair> {
        let rest = self.raw.get(self.at..)?;
        let (mut end, mut eq, mut escaped) = (rest.len(), None, [false, false]);
        for (i, &b) in rest.iter().enumerate() {
            match URL_CLASS[usize::from(b)] {
                UrlByte::Plain => {}
                UrlByte::Amp => {
                    end = i;
                    break;
                }
                UrlByte::Eq => {
                    if eq.is_none() {
                        eq = Some(i);
                    }
                }
                UrlByte::Percent => escaped[usize::from(eq.is_some())] = true,
                UrlByte::Plus => {
                    if self.plus_as_space {
                        escaped[usize::from(eq.is_some())] = true;
                    }
                }
            }
        }
        let start = self.at;
        self.at += end + 1;
        Some(Pair {
            start,
            end: start + end,
            eq: eq.map(|e| start + e),
            escaped,
        })
    }
}

/// Decoded key/value pairs of one postback, query and body merged, in arrival order.
///
/// All keys and values live back to back in one string, so a postback's
/// parameters cost two allocations, not two per parameter.
#[derive(Debug, Default, Clone)]
pub struct Params {
    /// Every decoded key and value, back to back.
    text: String,
    /// Per pair: where its key starts, where its value starts (the key's
    /// end) and where its value ends, in `text`.
    pairs: Vec<(u32, u32, u32)>,
    /// Key → position in `pairs`; built only once `pairs` outgrows [`LINEAR_SCAN_MAX`].
    index: Option<HashMap<String, usize>>,
    /// Decoding room for escaped input, reused.
    scratch: Vec<u8>,
}

impl Params {
    /// No parameters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A URL query string (without '?'). `+` is a literal plus unless plus_as_space.
    pub fn add_query(&mut self, raw: &[u8], plus_as_space: bool) -> Result<(), Reason> {
        self.atomically(|p| p.add_urlencoded(raw, plus_as_space))
    }

    /// An application/x-www-form-urlencoded body: `+` is a space.
    pub fn add_form(&mut self, raw: &[u8]) -> Result<(), Reason> {
        self.atomically(|p| p.add_urlencoded(raw, true))
    }

    /// A flat JSON object: string values as they are, number values as their exact source text
    /// (so {"amount": 12.30} gives "12.30"; use serde_json RawValue), null = key absent;
    /// booleans, arrays, objects, non-object top level, trailing garbage, invalid JSON => Reason::BadBody;
    /// a key twice in the object => Reason::DuplicateParam.
    pub fn add_json(&mut self, raw: &[u8]) -> Result<(), Reason> {
        self.add_entries(parse_flat_object(raw)?)
    }

    /// A JSON object whose nested objects are read as dotted paths: `{"event_data":
    /// {"revenue": 1.5}}` gives `event_data.revenue` = `1.5`. Booleans are
    /// `true`/`false`, arrays are skipped unread, `null` is absent; at most
    /// [`MAX_JSON_DEPTH`] levels, else `bad_body`. A path twice is `duplicate_param`.
    pub fn add_nested_json(&mut self, raw: &[u8]) -> Result<(), Reason> {
        let mut entries = Vec::new();
        let text = std::str::from_utf8(raw).map_err(|_| Reason::BadBody)?;
        flatten(text, "", 1, &mut entries)?;
        self.add_entries(entries)
    }

    fn add_entries(&mut self, entries: Vec<JsonEntry>) -> Result<(), Reason> {
        // A key repeated inside the object is a duplicate even when one of its values
        // is null, so this check runs over all keys before nulls are dropped.
        if entries.len() > 1 {
            let mut seen = HashSet::with_capacity(entries.len());
            let mut keys = entries
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !k.is_empty());
            if !keys.all(|k| seen.insert(k)) {
                return Err(Reason::DuplicateParam);
            }
        }
        self.atomically(|p| {
            for (key, value) in entries {
                if let Some(value) = value {
                    if key.is_empty() {
                        continue;
                    }
                    let start = p.text.len();
                    p.text.push_str(&key);
                    let mid = p.text.len();
                    p.text.push_str(&value);
                    p.keep(start, mid)?;
                }
            }
            Ok(())
        })
    }

    /// The decoded value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        let at = match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.position(key),
        };
        at.and_then(|i| self.pairs.get(i))
            .map(|&(_, v, e)| &self.text[v as usize..e as usize])
    }

    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        // Over the pairs themselves, not by index: no bounds check per pair
        // (this runs several times per postback).
        self.pairs.iter().map(|&(k, v, e)| self.slices(k, v, e))
    }

    /// How many pairs it holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether it holds no pair.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The key and value of the `i`th pair, in arrival order.
    pub(crate) fn pair(&self, i: usize) -> (&str, &str) {
        let (k, v, e) = self.pairs[i];
        self.slices(k, v, e)
    }

    /// The key from `k` to `v` and the value from `v` to `e` in `text`.
    fn slices(&self, k: u32, v: u32, e: u32) -> (&str, &str) {
        (
            &self.text[k as usize..v as usize],
            &self.text[v as usize..e as usize],
        )
    }

    fn key_at(&self, i: usize) -> &str {
        self.pair(i).0
    }

    fn position(&self, key: &str) -> Option<usize> {
        let (text, key) = (self.text.as_bytes(), key.as_bytes());
        // Lengths first: most keys differ in length, and are then told
        // apart without a slice made or a byte compared.
        self.pairs.iter().position(|&(k, v, _)| {
            (v - k) as usize == key.len() && text.get(k as usize..v as usize) == Some(key)
        })
    }

    /// Runs `add`, and on failure restores the pairs held before, so a caller that
    /// inspects `Params` after an error never sees half of a rejected input.
    fn atomically(
        &mut self,
        add: impl FnOnce(&mut Self) -> Result<(), Reason>,
    ) -> Result<(), Reason> {
        let (pairs, text) = (self.pairs.len(), self.text.len());
        let result = add(self);
        if result.is_err() {
            self.text.truncate(text);
            if self.pairs.len() > pairs {
                self.pairs.truncate(pairs);
                if let Some(index) = &mut self.index {
                    index.retain(|_, at| *at < pairs);
                }
            }
        }
        result
    }

    fn add_urlencoded(&mut self, raw: &[u8], plus_as_space: bool) -> Result<(), Reason> {
        // Decoding never lengthens the input: one reservation holds it all.
        // The pairs grow as they come: a hostile `&&&&...` must not reserve
        // twelve bytes per input byte up front.
        self.text.reserve(raw.len());
        if self.pairs.capacity() == 0 {
            self.pairs.reserve(8);
        }
        // The input is checked for UTF-8 once: when it is (it nearly always
        // is), a piece without escapes is a slice of it, taken as it is; when
        // it is not, each piece is checked, so that a bad byte is reported
        // where it sits (after a repeated key before it, for one).
        let whole = std::str::from_utf8(raw).ok();
        for pair in UrlPairs::new(raw, plus_as_space) {
            self.add_pair(raw, whole, &pair, plus_as_space)?;
        }
        Ok(())
    }

    /// Decodes the pair of `raw` that [`Pair`] describes, and keeps it
    /// unless its key is empty. `whole` is `raw` as text, when it is UTF-8.
    fn add_pair(
        &mut self,
        raw: &[u8],
        whole: Option<&str>,
        pair: &Pair,
        plus_as_space: bool,
    ) -> Result<(), Reason> {
        let (key, value) = (pair.name(), pair.value());
        // A piece begins and ends at a delimiter (ASCII) or at an end, so on
        // character boundaries of `whole`.
        let text = |piece: &std::ops::Range<usize>| whole.and_then(|w| w.get(piece.clone()));
        // Both halves are decoded before the empty-key check, so a broken
        // escape is reported wherever it sits.
        let start = self.text.len();
        let scratch = &mut self.scratch;
        let escaped = pair.escaped;
        percent_decode(
            &raw[key.clone()],
            text(&key),
            escaped[0],
            plus_as_space,
            &mut self.text,
            scratch,
        )?;
        let mid = self.text.len();
        percent_decode(
            &raw[value.clone()],
            text(&value),
            escaped[1],
            plus_as_space,
            &mut self.text,
            scratch,
        )?;
        if mid == start {
            self.text.truncate(start);
            return Ok(());
        }
        self.keep(start, mid)
    }

    /// Keeps the pair just written at the end of `text` (key from `start`,
    /// value from `mid`), unless its key is already there.
    fn keep(&mut self, start: usize, mid: usize) -> Result<(), Reason> {
        let key = &self.text[start..mid];
        let taken = match &self.index {
            Some(index) => index.contains_key(key),
            None => self.position(key).is_some(),
        };
        if taken {
            return Err(Reason::DuplicateParam);
        }
        let at = self.pairs.len();
        match &mut self.index {
            Some(index) => {
                index.insert(key.to_owned(), at);
            }
            None if at >= LINEAR_SCAN_MAX => {
                let mut index: HashMap<String, usize> =
                    (0..at).map(|i| (self.key_at(i).to_owned(), i)).collect();
                index.insert(key.to_owned(), at);
                self.index = Some(index);
            }
            None => {}
        }
        // Inputs are bounded far below 4 GiB (URI, header and body limits).
        let end = self.text.len() as u32;
        self.pairs.push((start as u32, mid as u32, end));
        Ok(())
    }
}

/// Decodes `%XX` escapes once (and `+` as a space when asked) onto the end of
/// `out`; `text` is `raw` as text when it is already known to be UTF-8, and
/// `escaped` says whether `raw` holds a `%` (or a `+` to read as a space):
/// without one it is copied as it is.
/// Anything that is not a complete two-hex-digit escape, or a result that is
/// not UTF-8, is `bad_encoding` (and `out` may then hold part of it).
fn percent_decode(
    raw: &[u8],
    text: Option<&str>,
    escaped: bool,
    plus_as_space: bool,
    out: &mut String,
    scratch: &mut Vec<u8>,
) -> Result<(), Reason> {
    if !escaped {
        let text = match text {
            Some(text) => text,
            None => std::str::from_utf8(raw).map_err(|_| Reason::BadEncoding)?,
        };
        out.push_str(text);
        return Ok(());
    }
    scratch.clear();
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'%' => {
                let hi = bytes.next().and_then(|&h| hex_value(h));
                let lo = bytes.next().and_then(|&l| hex_value(l));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => scratch.push(hi << 4 | lo),
                    _ => return Err(Reason::BadEncoding),
                }
            }
            b'+' if plus_as_space => scratch.push(b' '),
            _ => scratch.push(b),
        }
    }
    out.push_str(std::str::from_utf8(scratch).map_err(|_| Reason::BadEncoding)?);
    Ok(())
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One JSON member: `None` for a null value (the key counts as absent).
type JsonEntry = (String, Option<String>);

/// The members of the object `text` under `prefix` (empty at the top), nested
/// objects recursed into at `depth + 1`.
fn flatten(text: &str, prefix: &str, depth: usize, out: &mut Vec<JsonEntry>) -> Result<(), Reason> {
    if depth > MAX_JSON_DEPTH {
        return Err(Reason::BadBody);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let members = de.deserialize_map(Members).map_err(|_| Reason::BadBody)?;
    de.end().map_err(|_| Reason::BadBody)?;
    for (key, raw) in members {
        let path = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        let value = raw.get().trim();
        let read = match value.as_bytes().first() {
            Some(b'{') => {
                flatten(value, &path, depth + 1, out)?;
                continue;
            }
            // Lists (Branch's content_items) are not read: no role names one.
            Some(b'[') => continue,
            Some(b'"') => Some(serde_json::from_str::<String>(value).map_err(|_| Reason::BadBody)?),
            Some(b'-' | b'0'..=b'9') => Some(value.to_owned()),
            Some(b't') => Some("true".to_owned()),
            Some(b'f') => Some("false".to_owned()),
            Some(b'n') => None,
            _ => return Err(Reason::BadBody),
        };
        out.push((path, read));
    }
    Ok(())
}

/// Reads a flat JSON object without building a `Value` tree, keeping each number's
/// source text so `12.30` stays `12.30` (a float would make it `12.3`).
fn parse_flat_object(raw: &[u8]) -> Result<Vec<JsonEntry>, Reason> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let entries = de
        .deserialize_map(FlatObject)
        .map_err(|_| Reason::BadBody)?;
    de.end().map_err(|_| Reason::BadBody)?;
    Ok(entries)
}

/// An object's members in order, each value left unread.
struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Vec<(String, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
        while let Some(key) = map.next_key::<String>()? {
            members.push((key, map.next_value()?));
        }
        Ok(members)
    }
}

struct FlatObject;

impl<'de> Visitor<'de> for FlatObject {
    type Value = Vec<JsonEntry>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a flat JSON object of string or number values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
        while let Some(key) = map.next_key::<String>()? {
            let raw: &'de RawValue = map.next_value()?;
            let text = raw.get().trim();
            let value = match text.as_bytes().first() {
                Some(b'"') => {
                    Some(serde_json::from_str::<String>(text).map_err(de::Error::custom)?)
                }
                Some(b'-' | b'0'..=b'9') => Some(text.to_owned()),
                Some(b'n') => None,
                _ => return Err(de::Error::custom("value is not a string or a number")),
            };
            entries.push((key, value));
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input of up to six bytes from `a=&%+`: the pairs are what
    /// splitting at '&' and then at the first '=' gives, with the escapes of
    /// each half.
    #[test]
    fn url_pairs_split_as_a_split_at_ampersands_would() {
        let inputs = crate::testing::words(b"a=&%+", 6);
        assert_eq!(inputs.len(), (0..=6).map(|n| 5usize.pow(n)).sum::<usize>());
        for input in &inputs {
            for plus in [false, true] {
                let escaped = |half: &[u8]| half.iter().any(|&b| b == b'%' || (plus && b == b'+'));
                let want: Vec<_> = input
                    .split(|&b| b == b'&')
                    .map(|pair| match pair.iter().position(|&b| b == b'=') {
                        Some(eq) => (&pair[..eq], Some(&pair[eq + 1..])),
                        None => (pair, None),
                    })
                    .map(|(name, value)| {
                        let flags = [escaped(name), value.is_some_and(escaped)];
                        (name, value, flags)
                    })
                    .collect();
                let got: Vec<_> = UrlPairs::new(input, plus)
                    .map(|p| {
                        let value = p.eq.is_some().then(|| &input[p.value()]);
                        (&input[p.name()], value, p.escaped)
                    })
                    .collect();
                assert_eq!(
                    got,
                    want,
                    "{:?} plus_as_space={plus}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    type Pairs = &'static [(&'static str, &'static str)];

    fn pairs(p: &Params) -> Vec<(&str, &str)> {
        p.iter().collect()
    }

    fn query(raw: &str, plus_as_space: bool) -> Result<Params, Reason> {
        let mut p = Params::new();
        p.add_query(raw.as_bytes(), plus_as_space).map(|()| p)
    }

    #[test]
    fn query_table() {
        let rows: &[(&str, bool, Result<Pairs, Reason>)] = &[
            ("", false, Ok(&[])),
            ("a=1&b=2", false, Ok(&[("a", "1"), ("b", "2")])),
            ("b=2&a=1", false, Ok(&[("b", "2"), ("a", "1")])),
            // A pair without '=' is a key with an empty value; only the first '=' splits.
            ("flag&a=1", false, Ok(&[("flag", ""), ("a", "1")])),
            ("a=b=c", false, Ok(&[("a", "b=c")])),
            ("a==", false, Ok(&[("a", "=")])),
            ("a=", false, Ok(&[("a", "")])),
            // Empty keys are ignored, before or after decoding.
            ("&&a=1&&", false, Ok(&[("a", "1")])),
            ("=orphan&a=1", false, Ok(&[("a", "1")])),
            ("%20=x&a=1", false, Ok(&[(" ", "x"), ("a", "1")])),
            // ';' is data, not a separator.
            ("a=1;b=2", false, Ok(&[("a", "1;b=2")])),
            ("a;b=1", false, Ok(&[("a;b", "1")])),
            // Conventions #3: '+' in base64-like tokens.
            ("t=AbC+dE/f==", false, Ok(&[("t", "AbC+dE/f==")])),
            ("t=AbC+dE/f==", true, Ok(&[("t", "AbC dE/f==")])),
            ("t=AbC%2BdE%2Ff%3D%3D", true, Ok(&[("t", "AbC+dE/f==")])),
            ("a+b=c+d", true, Ok(&[("a b", "c d")])),
            ("a+b=c+d", false, Ok(&[("a+b", "c+d")])),
            // Conventions #4: decode exactly once.
            ("t=abc%252Fdef", false, Ok(&[("t", "abc%2Fdef")])),
            ("t=%2525", false, Ok(&[("t", "%25")])),
            ("t=%3D%26%3B", false, Ok(&[("t", "=&;")])),
            ("t=%41%6a%6A", false, Ok(&[("t", "Ajj")])),
            ("%74racking=x", false, Ok(&[("tracking", "x")])),
            // A raw '#' reaching us is data (browsers strip fragments earlier).
            ("t=#s2#", false, Ok(&[("t", "#s2#")])),
            // UTF-8: percent-encoded and raw.
            ("t=%D0%B0bc", false, Ok(&[("t", "аbc")])),
            ("t=\u{430}bc", false, Ok(&[("t", "аbc")])),
            (
                "payout=10%C2%A4cy=EUR",
                false,
                Ok(&[("payout", "10¤cy=EUR")]),
            ),
            // Invalid escapes.
            ("t=%TR", false, Err(Reason::BadEncoding)),
            ("t=%pa", false, Err(Reason::BadEncoding)),
            ("t=%", false, Err(Reason::BadEncoding)),
            ("t=%4", false, Err(Reason::BadEncoding)),
            ("t=%4g", false, Err(Reason::BadEncoding)),
            ("t=%%41", false, Err(Reason::BadEncoding)),
            ("t=%TRANSACTION_ID%", false, Err(Reason::BadEncoding)),
            ("cid=XYZ%payout=1", false, Err(Reason::BadEncoding)),
            ("%zz=1", false, Err(Reason::BadEncoding)),
            ("=%zz", false, Err(Reason::BadEncoding)),
            // Decoded bytes that are not UTF-8.
            ("t=%FF", false, Err(Reason::BadEncoding)),
            ("t=%C3", false, Err(Reason::BadEncoding)),
            ("t=%C3%28", false, Err(Reason::BadEncoding)),
            ("t=%ED%A0%80", false, Err(Reason::BadEncoding)),
            ("%FF=1", false, Err(Reason::BadEncoding)),
            // Conventions #9: the same key twice.
            ("cid=a&cid=b", false, Err(Reason::DuplicateParam)),
            ("cid=a&cid=a", false, Err(Reason::DuplicateParam)),
            ("cid&cid", false, Err(Reason::DuplicateParam)),
            ("cid=a&%63id=b", false, Err(Reason::DuplicateParam)),
            // Keys are case-sensitive.
            ("cid=a&CID=b", false, Ok(&[("cid", "a"), ("CID", "b")])),
        ];
        for (raw, plus, want) in rows {
            let got = query(raw, *plus);
            match (want, &got) {
                (Ok(want), Ok(p)) => assert_eq!(&pairs(p), want, "query {raw:?}"),
                (Err(want), Err(got)) => assert_eq!(got, want, "query {raw:?}"),
                _ => panic!("query {raw:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn query_rejects_raw_invalid_utf8() {
        let mut p = Params::new();
        assert_eq!(p.add_query(b"t=a\xffb", false), Err(Reason::BadEncoding));
        assert_eq!(p.add_form(b"t=a\xffb"), Err(Reason::BadEncoding));
        // The first fault in the input decides, whichever the kind: a key
        // repeated before a bad byte, a bad byte before a repeated key.
        assert_eq!(
            Params::new().add_query(b"a=1&a=2&b=\xff", false),
            Err(Reason::DuplicateParam)
        );
        assert_eq!(
            Params::new().add_query(b"b=\xff&a=1&a=2", false),
            Err(Reason::BadEncoding)
        );
        // Multi-byte text (valid as a whole) split by the delimiters, with
        // and without escapes, taken as it is.
        let mut p = Params::new();
        assert_eq!(
            p.add_query("к=ключ&ü=%C3%BC+x&plain=ок".as_bytes(), false),
            Ok(())
        );
        assert_eq!(p.get("к"), Some("ключ"));
        assert_eq!(p.get("ü"), Some("ü+x"));
        assert_eq!(p.get("plain"), Some("ок"));
    }

    #[test]
    fn form_table() {
        let rows: &[(&str, Result<Pairs, Reason>)] = &[
            ("t=AbC+dE/f==", Ok(&[("t", "AbC dE/f==")])),
            ("t=AbC%2BdE%2Ff%3D%3D", Ok(&[("t", "AbC+dE/f==")])),
            (
                "transaction%5Bamount%5D=2995",
                Ok(&[("transaction[amount]", "2995")]),
            ),
            (
                "transaction[amount]=2995",
                Ok(&[("transaction[amount]", "2995")]),
            ),
            ("a=1&b=", Ok(&[("a", "1"), ("b", "")])),
            ("t=%TR", Err(Reason::BadEncoding)),
            ("t=%FF", Err(Reason::BadEncoding)),
            ("a=1&a=2", Err(Reason::DuplicateParam)),
        ];
        for (raw, want) in rows {
            let mut p = Params::new();
            let got = p.add_form(raw.as_bytes()).map(|()| pairs(&p));
            assert_eq!(&got, &want.map(|w| w.to_vec()), "form {raw:?}");
        }
    }

    #[test]
    fn json_table() {
        let rows: &[(&str, Result<Pairs, Reason>)] = &[
            (r#"{}"#, Ok(&[])),
            (r#" { "a" : "1" } "#, Ok(&[("a", "1")])),
            (r#"{"b":"2","a":"1"}"#, Ok(&[("b", "2"), ("a", "1")])),
            // Numbers keep their source text.
            (r#"{"amount":12.30}"#, Ok(&[("amount", "12.30")])),
            (r#"{"amount":-5.00}"#, Ok(&[("amount", "-5.00")])),
            (r#"{"amount":2995}"#, Ok(&[("amount", "2995")])),
            (r#"{"amount":1e3}"#, Ok(&[("amount", "1e3")])),
            (
                r#"{"amount":0.1000000000000000055511151231257827}"#,
                Ok(&[("amount", "0.1000000000000000055511151231257827")]),
            ),
            // Strings as they are: no percent-decoding, no plus rule.
            (r#"{"t":"AbC+dE/f=="}"#, Ok(&[("t", "AbC+dE/f==")])),
            (r#"{"t":"abc%252Fdef"}"#, Ok(&[("t", "abc%252Fdef")])),
            (r#"{"t":"\u0430bc\"\\"}"#, Ok(&[("t", "аbc\"\\")])),
            (r#"{"t":"a\u0001b"}"#, Ok(&[("t", "a\u{1}b")])),
            (r#"{"t":""}"#, Ok(&[("t", "")])),
            // null = absent; empty keys are ignored.
            (r#"{"a":null,"b":"2"}"#, Ok(&[("b", "2")])),
            (r#"{"":"x","b":"2"}"#, Ok(&[("b", "2")])),
            (r#"{"":"x","":"y"}"#, Ok(&[])),
            // Duplicates, including through escapes and nulls.
            (r#"{"a":"1","a":"2"}"#, Err(Reason::DuplicateParam)),
            (r#"{"a":"1","\u0061":"2"}"#, Err(Reason::DuplicateParam)),
            (r#"{"a":null,"a":"2"}"#, Err(Reason::DuplicateParam)),
            // Not a flat object of strings and numbers.
            (r#"{"a":true}"#, Err(Reason::BadBody)),
            (r#"{"a":false}"#, Err(Reason::BadBody)),
            (r#"{"a":[1]}"#, Err(Reason::BadBody)),
            (r#"{"a":{"b":"c"}}"#, Err(Reason::BadBody)),
            (r#"[{"a":"1"}]"#, Err(Reason::BadBody)),
            (r#""a""#, Err(Reason::BadBody)),
            (r#"12"#, Err(Reason::BadBody)),
            (r#"null"#, Err(Reason::BadBody)),
            (r#""#, Err(Reason::BadBody)),
            (r#"   "#, Err(Reason::BadBody)),
            (r#"{"a":"1"} x"#, Err(Reason::BadBody)),
            (r#"{"a":"1"}{"b":"2"}"#, Err(Reason::BadBody)),
            (r#"{"a":"1",}"#, Err(Reason::BadBody)),
            (r#"{"a":"1""#, Err(Reason::BadBody)),
            (r#"{'a':'1'}"#, Err(Reason::BadBody)),
            (r#"{"a":01}"#, Err(Reason::BadBody)),
            (r#"{"a":NaN}"#, Err(Reason::BadBody)),
            (r#"{"a":"\ud800"}"#, Err(Reason::BadBody)),
            ("a=1&b=2", Err(Reason::BadBody)),
        ];
        for (raw, want) in rows {
            let mut p = Params::new();
            let got = p.add_json(raw.as_bytes()).map(|()| pairs(&p));
            assert_eq!(&got, &want.map(|w| w.to_vec()), "json {raw:?}");
        }
    }

    #[test]
    fn json_rejects_invalid_utf8_and_deep_nesting() {
        let mut p = Params::new();
        assert_eq!(p.add_json(b"{\"t\":\"a\xffb\"}"), Err(Reason::BadBody));
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(p.add_json(deep.as_bytes()), Err(Reason::BadBody));
        assert!(p.is_empty());
    }

    #[test]
    fn nested_json_reads_objects_as_dotted_paths() {
        let nested = |raw: &str| {
            let mut p = Params::new();
            p.add_nested_json(raw.as_bytes()).map(|()| {
                pairs(&p)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<Vec<_>>()
            })
        };
        let own = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        // Branch's default body: nested objects, a list, booleans, ms times.
        let branch = r#"{"name":"PURCHASE","timestamp":1631842151653,"attributed":true,
            "last_attributed_touch_data":{"~id":"987","~campaign":"spring","+via_features":["x"]},
            "event_data":{"revenue":12.30,"currency":"USD","transaction_id":"T-1"},
            "user_data":{"os":"IOS","limit_ad_tracking":false,"developer_identity":null},
            "content_items":[{"$sku":"1"}]}"#;
        assert_eq!(
            nested(branch),
            Ok(own(&[
                ("name", "PURCHASE"),
                ("timestamp", "1631842151653"),
                ("attributed", "true"),
                ("last_attributed_touch_data.~id", "987"),
                ("last_attributed_touch_data.~campaign", "spring"),
                ("event_data.revenue", "12.30"),
                ("event_data.currency", "USD"),
                ("event_data.transaction_id", "T-1"),
                ("user_data.os", "IOS"),
                ("user_data.limit_ad_tracking", "false"),
            ]))
        );
        // A flat body reads as it always did, booleans now included.
        assert_eq!(
            nested(r#"{"a":"1","b":2,"c":true}"#),
            Ok(own(&[("a", "1"), ("b", "2"), ("c", "true")]))
        );
        // Four levels at most; a path twice; not an object; garbage.
        assert_eq!(
            nested(r#"{"a":{"b":{"c":{"d":"4"}}}}"#),
            Ok(own(&[("a.b.c.d", "4")]))
        );
        assert_eq!(
            nested(r#"{"a":{"b":{"c":{"d":{"e":"5"}}}}}"#),
            Err(Reason::BadBody)
        );
        assert_eq!(
            nested(r#"{"a.b":"1","a":{"b":"2"}}"#),
            Err(Reason::DuplicateParam)
        );
        assert_eq!(nested(r#"["a"]"#), Err(Reason::BadBody));
        assert_eq!(nested(r#"{"a":"1"} x"#), Err(Reason::BadBody));
        assert_eq!(
            Params::new().add_nested_json(b"{\"t\":\"a\xffb\"}"),
            Err(Reason::BadBody)
        );
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        // A list, however deep, is skipped unread (serde_json walks it without
        // recursing; the body limit bounds it).
        assert_eq!(nested(&deep), Ok(Vec::new()));
    }

    #[test]
    fn query_and_body_merge_and_reject_shared_keys() {
        let rows: &[(&str, &str, &str, Result<Pairs, Reason>)] = &[
            ("a=1", "form", "b=2", Ok(&[("a", "1"), ("b", "2")])),
            (
                "a=1",
                "json",
                r#"{"b":2.50}"#,
                Ok(&[("a", "1"), ("b", "2.50")]),
            ),
            ("a=1", "form", "a=1", Err(Reason::DuplicateParam)),
            ("a=1", "form", "a=2", Err(Reason::DuplicateParam)),
            ("a=1", "json", r#"{"a":"2"}"#, Err(Reason::DuplicateParam)),
            // A null in the body is an absent key, so it does not clash.
            ("a=1", "json", r#"{"a":null}"#, Ok(&[("a", "1")])),
        ];
        for (q, kind, body, want) in rows {
            let mut p = query(q, false).expect("query decodes");
            let got = match *kind {
                "form" => p.add_form(body.as_bytes()),
                _ => p.add_json(body.as_bytes()),
            }
            .map(|()| pairs(&p));
            assert_eq!(&got, &want.map(|w| w.to_vec()), "{q:?} + {kind} {body:?}");
        }
    }

    #[test]
    fn failed_add_leaves_params_unchanged() {
        let mut p = query("a=1", false).expect("query decodes");
        assert_eq!(p.add_form(b"b=2&c=%zz"), Err(Reason::BadEncoding));
        assert_eq!(p.add_form(b"b=2&a=3"), Err(Reason::DuplicateParam));
        assert_eq!(p.add_json(br#"{"b":"2","c":true}"#), Err(Reason::BadBody));
        assert_eq!(pairs(&p), vec![("a", "1")]);
        assert_eq!(p.get("b"), None);
        assert_eq!(p.add_form(b"b=2"), Ok(()));
        assert_eq!(pairs(&p), vec![("a", "1"), ("b", "2")]);
    }

    #[test]
    fn many_pairs_use_the_index_and_stay_consistent() {
        let raw: String = (0..2000).map(|i| format!("k{i}=v{i}&")).collect();
        let mut p = query(&raw, false).expect("query decodes");
        assert_eq!(p.len(), 2000);
        assert_eq!(p.get("k0"), Some("v0"));
        assert_eq!(p.get("k1999"), Some("v1999"));
        assert_eq!(p.get("k2000"), None);
        assert_eq!(p.add_form(b"k1234=x"), Err(Reason::DuplicateParam));
        // A rollback past the index threshold keeps the index in step with the pairs.
        assert_eq!(p.add_form(b"n1=1&n2=2&k5=dup"), Err(Reason::DuplicateParam));
        assert_eq!(p.get("n1"), None);
        assert_eq!(p.add_form(b"n1=1"), Ok(()));
        assert_eq!(p.get("n1"), Some("1"));
        assert_eq!(p.len(), 2001);

        let dup_last = format!("{raw}k7=again");
        assert_eq!(query(&dup_last, false).err(), Some(Reason::DuplicateParam));
    }

    #[test]
    fn accessors() {
        let p = Params::new();
        assert!(p.is_empty());
        assert_eq!(p.len(), 0);
        let p = query("x=1&y=", false).expect("query decodes");
        assert!(!p.is_empty());
        assert_eq!(p.len(), 2);
        assert_eq!(p.get("x"), Some("1"));
        assert_eq!(p.get("y"), Some(""));
        assert_eq!(p.get("z"), None);
    }
}
