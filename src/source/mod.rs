//! Sources: who may send postbacks and how each one names its parameters.
//! A source owns its credentials and its [`ParseRules`]; with no configured
//! sources, one `default` source takes the reference format of SPEC §3.

use std::collections::HashMap;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::postback::{ParseRules, Reason};

/// One sender.
#[derive(Debug)]
pub struct Source {
    pub name: Arc<str>,
    /// Accepted api keys (several, for rotation); empty means no key is asked for.
    keys: Vec<Vec<u8>>,
    pub rules: ParseRules,
    /// Whether `conversion_time` is the click time the postback carries.
    pub conversion_at_click: bool,
}

impl Source {
    pub fn new(name: &str, keys: Vec<String>, rules: ParseRules) -> Source {
        Source {
            name: Arc::from(name),
            keys: keys.into_iter().map(String::into_bytes).collect(),
            rules,
            conversion_at_click: false,
        }
    }

    /// Checks `presented` against every key in constant time per key, so the
    /// reply time does not tell how much of a key was right.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<(), Reason> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let presented = presented.ok_or(Reason::MissingApiKey)?.as_bytes();
        let mut ok = subtle::Choice::from(0);
        for k in &self.keys {
            ok |= k.as_slice().ct_eq(presented);
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(Reason::BadApiKey)
        }
    }
}

/// Every configured source, by name.
#[derive(Debug, Default)]
pub struct Sources {
    by_name: HashMap<String, Arc<Source>>,
    /// The source of plain `/postback` and `/pixel` requests.
    default: Option<Arc<Source>>,
}

impl Sources {
    /// The single `default` source with the reference format and one key.
    pub fn single_default(api_key: String) -> Sources {
        let s = Arc::new(Source::new(
            "default",
            vec![api_key],
            ParseRules::reference(),
        ));
        Sources {
            by_name: HashMap::from([("default".to_owned(), s.clone())]),
            default: Some(s),
        }
    }

    /// The source named in a path, or the default one.
    pub fn resolve(&self, name: Option<&str>) -> Result<&Arc<Source>, Reason> {
        match name {
            Some(n) => self.by_name.get(n).ok_or(Reason::UnknownSource),
            None => self.default.as_ref().ok_or(Reason::UnknownSource),
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        let s = Source::new(
            "n",
            vec!["old".into(), "new".into()],
            ParseRules::reference(),
        );
        assert_eq!(s.authenticate(Some("new")), Ok(()));
        assert_eq!(s.authenticate(Some("old")), Ok(()));
        assert_eq!(s.authenticate(Some("ne")), Err(Reason::BadApiKey));
        assert_eq!(s.authenticate(Some("newer")), Err(Reason::BadApiKey));
        assert_eq!(s.authenticate(None), Err(Reason::MissingApiKey));
        let open = Source::new("n", vec![], ParseRules::reference());
        assert_eq!(open.authenticate(None), Ok(()));
    }

    #[test]
    fn resolves_by_path_name_or_default() {
        let s = Sources::single_default("k".into());
        assert_eq!(&*s.resolve(None).unwrap().name, "default");
        assert_eq!(&*s.resolve(Some("default")).unwrap().name, "default");
        assert_eq!(s.resolve(Some("nope")).unwrap_err(), Reason::UnknownSource);
    }
}
