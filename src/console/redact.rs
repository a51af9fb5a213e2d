//! Secrets out of what the console shows: the value of every parameter that
//! carries a key (the source's api key names, and any name like a key, token,
//! secret, password or signature), and any value that is one of the
//! configured keys wherever it appears. The tracking token stays: it is what
//! the operator came to see.

use crate::postback::Role;
use crate::source::{Source, Sources};

/// What a redacted value reads as.
pub(crate) const REDACTED: &str = "[redacted]";

/// Parts of parameter names that say the value is a secret: the list
/// [`words_at`] answers from, kept here whole for its test.
#[cfg(test)]
const SECRET_WORDS: &[&str] = &[
    "key", "token", "secret", "pass", "pwd", "auth", "sign", "sig", "hash", "secure",
];

/// The words of parameter names that say the value is a secret ("key",
/// "token", "secret", "pass", "pwd", "auth", "sign", "sig", "hash",
/// "secure") that start with the two bytes `pair`
/// (lowercase), or none. Every word is found through its first two letters
/// ("sign" through "sig", which it contains); a test holds the two lists
/// together.
fn words_at(pair: [u8; 2]) -> &'static [&'static str] {
    match &pair {
        b"ke" => &["key"],
        b"to" => &["token"],
        b"se" => &["secret", "secure"],
        b"pa" => &["pass"],
        b"pw" => &["pwd"],
        b"au" => &["auth"],
        b"si" => &["sig"],
        b"ha" => &["hash"],
        _ => &[],
    }
}

/// Whether `name` contains one of [`SECRET_WORDS`], ignoring ASCII case:
/// one pass over the name's pairs of bytes, and only where a pair starts a
/// word is that word compared (this runs for every parameter of every
/// request the console keeps). `| 0x20` lowercases ASCII letters and maps
/// no other byte onto one.
fn names_a_secret(name: &[u8]) -> bool {
    name.windows(2).enumerate().any(|(i, w)| {
        words_at([w[0] | 0x20, w[1] | 0x20]).iter().any(|word| {
            name[i..]
                .get(..word.len())
                .is_some_and(|part| part.eq_ignore_ascii_case(word.as_bytes()))
        })
    })
}

/// Whether the parameter `name` (percent-decoded) carries a secret for
/// `source`: one of its api key names, or a name like a secret that is not
/// one of its roles' own parameters (the tracking token `token` is data).
fn secret_name(name: &[u8], source: Option<&Source>) -> bool {
    let is = |n: &String| n.as_bytes().eq_ignore_ascii_case(name);
    if source.is_some_and(|s| s.rules.names[Role::ApiKey].iter().any(is)) {
        return true;
    }
    if !names_a_secret(name) {
        return false;
    }
    !source.is_some_and(|s| {
        Role::ALL
            .into_iter()
            .any(|r| r.names(&s.rules.names).iter().any(is))
    })
}

/// What the console must not keep of a request: the values of its source's
/// key parameters and of parameters named like a secret, and any configured
/// key wherever it appears (a value, a bare word, a path segment, a name or a
/// string at any depth of a JSON body). A request is redacted as it is
/// kept, so nothing of a secret is ever held, and kept in whole parameters,
/// so a key is never cut into a prefix that no longer matches it.
pub(crate) struct Secrets<'a> {
    pub(crate) source: Option<&'a Source>,
    pub(crate) sources: &'a Sources,
}

impl Secrets<'_> {
    /// `path` with every segment that is a key replaced by `{key}`, whole
    /// segments of at most `limit` bytes in all, appended to `out`; whether
    /// anything was left out.
    pub(crate) fn path(&self, path: &str, limit: usize, out: &mut Vec<u8>) -> bool {
        self.pieces(path.as_bytes(), b'/', limit, out, |segment, piece| {
            if self.encodes_a_key(segment) {
                piece.extend_from_slice(b"{key}");
            } else {
                piece.extend_from_slice(segment);
            }
        })
    }

    /// Whether percent-encoded `text` decodes to a configured key.
    fn encodes_a_key(&self, text: &[u8]) -> bool {
        self.sources.may_decode_to_key(text.len()) && self.sources.is_key(&decode_bytes(text))
    }

    /// A query or form body with every secret replaced, whole parameters of
    /// at most `limit` bytes in all, appended to `out`; whether anything was
    /// left out.
    pub(crate) fn form(&self, text: &[u8], limit: usize, out: &mut Vec<u8>) -> bool {
        let owner = self.cache_owner();
        self.pieces(text, b'&', limit, out, |pair, piece| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], Some(&pair[i + 1..])),
                None => (pair, None),
            };
            let verdict = self.name_verdict(name, owner);
            if verdict.is_key {
                piece.extend_from_slice(REDACTED.as_bytes());
            } else {
                piece.extend_from_slice(name);
            }
            if let Some(value) = value {
                piece.push(b'=');
                if verdict.names_a_secret || self.encodes_a_key(value) {
                    piece.extend_from_slice(REDACTED.as_bytes());
                } else {
                    piece.extend_from_slice(value);
                }
            }
        })
    }

    /// What the cache of verdicts knows this source and configuration by:
    /// the configuration's id and the source's address in it, or none
    /// (nothing cached) when the source is not one that `sources` took in
    /// ([`Source::member_of`]: a source in a configuration is shared and
    /// never changes).
    fn cache_owner(&self) -> Option<(u64, usize)> {
        let source = match self.source {
            None => 0,
            Some(s) if s.member_of == self.sources.id() => std::ptr::from_ref(s) as usize,
            Some(_) => return None,
        };
        Some((self.sources.id(), source))
    }

    /// What redaction does with a parameter called `name` (as sent) and
    /// its value: from this thread's cache when the same name of the same
    /// source of the same configuration was met lately, else worked out
    /// (decoding the name, comparing it with the keys, the source's key
    /// names and the secret words) and kept there.
    fn name_verdict(&self, name: &[u8], owner: Option<(u64, usize)>) -> NameVerdict {
        let work = || {
            let decoded = decode_bytes(name);
            NameVerdict {
                is_key: self.sources.is_key(&decoded),
                names_a_secret: secret_name(&decoded, self.source),
            }
        };
        let Some(owner) = owner.filter(|_| name.len() <= CACHED_NAME_MAX) else {
            return work();
        };
        let slot = {
            let mut h = std::hash::BuildHasher::build_hasher(&super::Fnv);
            std::hash::Hasher::write(&mut h, name);
            std::hash::Hasher::finish(&h) % NAME_CACHE_SLOTS as u64
        };
        NAMES.with_borrow_mut(|cache| {
            let entry = &mut cache[slot as usize];
            match entry {
                Some(e) if e.owner == owner && e.name() == name => e.verdict,
                _ => {
                    let verdict = work();
                    let mut kept = [0; CACHED_NAME_MAX];
                    kept[..name.len()].copy_from_slice(name);
                    *entry = Some(CachedName {
                        owner,
                        len: name.len() as u8,
                        name: kept,
                        verdict,
                    });
                    verdict
                }
            }
        })
    }

    /// Splits `text` at `sep` and appends each part as `write` makes it,
    /// while the whole stays within `limit`; whether parts were left out.
    fn pieces(
        &self,
        text: &[u8],
        sep: u8,
        limit: usize,
        out: &mut Vec<u8>,
        mut write: impl FnMut(&[u8], &mut Vec<u8>),
    ) -> bool {
        let start = out.len();
        for (i, part) in text.split(|&b| b == sep).enumerate() {
            // Each part is written in place and taken back if it does not fit.
            let end = out.len();
            if i > 0 {
                out.push(sep);
            }
            write(part, out);
            if out.len() - start > limit {
                out.truncate(end);
                return true;
            }
        }
        false
    }

    /// A JSON body with every secret replaced at any depth, appended to `out`
    /// when it fits in `limit` (else a note saying why it is not kept);
    /// whether it was left out for its size.
    pub(crate) fn json(&self, text: &[u8], limit: usize, out: &mut Vec<u8>) -> bool {
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(text) else {
            out.extend_from_slice(NOT_JSON.as_bytes());
            return false;
        };
        self.walk(&mut value);
        let kept = value.to_string();
        if kept.len() > limit {
            out.extend_from_slice(TOO_LONG_JSON.as_bytes());
            return true;
        }
        out.extend_from_slice(kept.as_bytes());
        false
    }

    /// Redacts `value` in place: strings that are keys, whatever sits under
    /// a secret name (whole), and names that are keys.
    fn walk(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) if self.sources.is_key(s.as_bytes()) => {
                *s = REDACTED.to_owned();
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.walk(v)),
            Value::Object(map) => {
                let fields = std::mem::take(map);
                for (k, mut v) in fields {
                    if secret_name(k.as_bytes(), self.source) {
                        v = Value::String(REDACTED.to_owned());
                    } else {
                        self.walk(&mut v);
                    }
                    let k = if self.sources.is_key(k.as_bytes()) {
                        REDACTED.to_owned()
                    } else {
                        k
                    };
                    map.insert(k, v);
                }
            }
            _ => {}
        }
    }
}

/// What redaction does with a parameter: replace its name (the name is a
/// key), its value (the name says the value is a secret), or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameVerdict {
    is_key: bool,
    names_a_secret: bool,
}

/// The longest parameter name (as sent) whose verdict is cached; longer
/// ones are worked out each time.
const CACHED_NAME_MAX: usize = 30;

/// Slots of each thread's cache of verdicts, one name per slot (chosen by
/// the name's FNV-1a hash, the newest name in a slot wins). A sender who
/// makes its names collide only makes the console work each verdict out,
/// as it would without the cache.
const NAME_CACHE_SLOTS: usize = 64;

/// A verdict for a name of one source (its address, 0 for none) of one
/// configuration ([`Sources::id`]): both stay fixed while that
/// configuration is alive, and no later configuration has its id.
struct CachedName {
    owner: (u64, usize),
    len: u8,
    name: [u8; CACHED_NAME_MAX],
    verdict: NameVerdict,
}

impl CachedName {
    fn name(&self) -> &[u8] {
        &self.name[..usize::from(self.len)]
    }
}

thread_local! {
    /// The verdicts of the names this thread met last.
    static NAMES: std::cell::RefCell<[Option<CachedName>; NAME_CACHE_SLOTS]> =
        const { std::cell::RefCell::new([const { None }; NAME_CACHE_SLOTS]) };
}

/// What the console shows for a JSON body that does not parse.
const NOT_JSON: &str = "(a body that is not valid JSON: not kept)";

/// What the console shows for a JSON body too long to keep whole.
const TOO_LONG_JSON: &str = "(a JSON body too long to keep whole: not kept)";

/// Percent-decodes `s` for comparison (no copy when there is nothing to decode).
fn decode_bytes(s: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(decode_raw(s))
}

/// Percent-decodes for comparison and display (`+` stays `+`); invalid
/// escapes stay as they are.
pub(crate) fn decode(s: &str) -> String {
    String::from_utf8_lossy(&decode_raw(s.as_bytes())).into_owned()
}

/// [`decode`] on bytes, to bytes: what a key is compared with.
fn decode_raw(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_words_are_found_anywhere_in_a_name_in_any_case() {
        for name in [
            "key",
            "API_KEY",
            "xToKen",
            "client_secret",
            "Passwd",
            "pwd",
            "oauth",
            "signature",
            "sig",
            "md5hash",
            "secure_id",
        ] {
            assert!(names_a_secret(name.as_bytes()), "{name}");
        }
        for name in [
            "",
            "k",
            "tracking",
            "amount",
            "sub1",
            "transaction_id",
            "currency",
            "ke",
            "tokn",
        ] {
            assert!(!names_a_secret(name.as_bytes()), "{name}");
        }
    }
    /// The plain definition the fast one must agree with.
    fn contains_a_secret_word(name: &[u8]) -> bool {
        let lower = name.to_ascii_lowercase();
        SECRET_WORDS
            .iter()
            .any(|w| lower.windows(w.len()).any(|part| part == w.as_bytes()))
    }

    #[test]
    fn the_pair_table_finds_what_the_word_list_says() {
        for w in SECRET_WORDS {
            assert!(names_a_secret(w.as_bytes()), "{w}");
            assert!(names_a_secret(w.to_ascii_uppercase().as_bytes()), "{w}");
        }
        // Every name of up to three bytes over an alphabet of the words'
        // letters, their capitals and a few others, and longer mixes.
        let mut names =
            crate::testing::words(b"keytonsecrtpaswdhuigKEYTONSECRTPASWDHUIG_0@[`{\xff", 3);
        for (i, w) in SECRET_WORDS.iter().enumerate() {
            names.push(format!("x_{w}_{i}").into_bytes());
            names.push(format!("{}{}", &w[..w.len() - 1], "Q").into_bytes());
        }
        names.push("ключ_token".as_bytes().to_vec());
        for n in &names {
            assert_eq!(
                names_a_secret(n),
                contains_a_secret_word(n),
                "{}",
                String::from_utf8_lossy(n)
            );
        }
    }

    use crate::postback::ParseRules;

    fn kept(
        secrets: &Secrets<'_>,
        f: impl Fn(&Secrets<'_>, &mut Vec<u8>) -> bool,
    ) -> (String, bool) {
        let mut out = Vec::new();
        let cut = f(secrets, &mut out);
        (String::from_utf8(out).unwrap(), cut)
    }

    #[test]
    fn keys_are_redacted_wherever_they_hide_and_the_token_is_not() {
        let key = "k".repeat(20);
        let mut rules = ParseRules::reference();
        rules.names[Role::ApiKey] = vec!["secure".into()];
        rules.names[Role::Tracking] = vec!["token".into()];
        let source = Source::new("s", vec![key.clone()], rules);
        let sources = Sources::from_list(vec![source]);
        let secrets = Secrets {
            source: sources.get("s").map(|s| s.as_ref()),
            sources: &sources,
        };
        let q = format!(
            "secure={key}&token=abc&amount=1.00&sub1={key}&Password=hunter2&x%5Bsig%5D=zz&note=hi&{key}&sub2=%6B{}",
            &key[1..]
        );
        let (out, cut) = kept(&secrets, |s, o| s.form(q.as_bytes(), 1024, o));
        assert!(!cut);
        assert!(
            !out.contains(&key[..16]) && !out.contains("hunter2") && !out.contains("zz"),
            "{out}"
        );
        assert!(
            out.contains("token=abc") && out.contains("note=hi"),
            "{out}"
        );
        // Whole parameters only: a key across the limit is left out, not cut.
        let long = format!(
            "note={}&sub1={key}&tail={}",
            "n".repeat(990),
            "t".repeat(30)
        );
        let (out, cut) = kept(&secrets, |s, o| s.form(long.as_bytes(), 1024, o));
        assert!(
            cut && !out.contains("kkkk") && !out.contains("tail"),
            "{out}"
        );
        assert!(out.ends_with("&sub1=[redacted]"), "{out}");
        let (out, _) = kept(&secrets, |s, o| s.path(&format!("/postback/{key}"), 256, o));
        assert_eq!(out, "/postback/{key}");
        let j = format!(
            r#"{{"api_key":"{key}","token":"abc","data":{{"click":{{"k2":"{key}"}},"list":["{key}"]}},"{key}":1,"auth":{{"x":"y"}}}}"#
        );
        let (out, _) = kept(&secrets, |s, o| s.json(j.as_bytes(), 1024, o));
        assert!(
            !out.contains(&key) && out.contains("abc") && !out.contains("\"y\""),
            "{out}"
        );
        let (out, _) = kept(&secrets, |s, o| s.json(b"{\"api_key\":\"x", 1024, o));
        assert_eq!(out, NOT_JSON);
    }

    /// The cache of verdicts answers as the work it saves would: the same
    /// names met again, a reloaded configuration whose key names differ, and
    /// a source that is not the configuration's own.
    #[test]
    fn cached_verdicts_follow_the_configuration_in_use() {
        let form =
            |secrets: &Secrets<'_>, q: &str| kept(secrets, |s, o| s.form(q.as_bytes(), 1024, o)).0;
        let with_key_name = |name: &str| {
            let mut rules = ParseRules::reference();
            rules.names[Role::ApiKey] = vec![name.into()];
            Sources::from_list(vec![Source::new("s", vec!["k".repeat(20)], rules)])
        };
        let q = "aff=123&zone=9&aff_sub=x";
        let first = with_key_name("aff");
        let secrets = Secrets {
            source: first.get("s").map(|s| s.as_ref()),
            sources: &first,
        };
        for _ in 0..3 {
            assert_eq!(form(&secrets, q), "aff=[redacted]&zone=9&aff_sub=x");
        }
        // Reloaded: `aff` is no longer the key's name, `zone` is.
        let reloaded = with_key_name("zone");
        let secrets = Secrets {
            source: reloaded.get("s").map(|s| s.as_ref()),
            sources: &reloaded,
        };
        assert_eq!(form(&secrets, q), "aff=123&zone=[redacted]&aff_sub=x");
        // A source the configuration does not hold is worked out each time.
        let mut rules = ParseRules::reference();
        rules.names[Role::ApiKey] = vec!["aff_sub".into()];
        let outsider = Source::new("s", vec![], rules);
        let secrets = Secrets {
            source: Some(&outsider),
            sources: &reloaded,
        };
        assert_eq!(form(&secrets, q), "aff=123&zone=9&aff_sub=[redacted]");
        // A name that is a configured key is replaced wherever it sits.
        let key = "k".repeat(20);
        let secrets = Secrets {
            source: None,
            sources: &reloaded,
        };
        assert_eq!(form(&secrets, &format!("{key}&a=1")), "[redacted]&a=1");
    }
}
