//! Postback extraction and strict parsing: raw query/body bytes in, a checked
//! [`Conversion`] or a [`Reason`] out.
//!
//! This module is pure: no I/O, no clock, no Kafka. Its callers pass in the time
//! and the source's [`ParseRules`], so every rule runs in a table test.
#![warn(missing_docs)]

#[doc(hidden)]
pub mod check;
pub(crate) mod decode;
pub(crate) mod parse;
pub(crate) mod placeholders;
pub(crate) mod reason;
pub(crate) mod role;
pub(crate) mod rules;

pub use decode::Params;
pub use parse::{ignored, parse, Conversion};
pub use reason::Reason;
pub use role::Role;
pub use rules::{AmountFormat, AmountRules, Names, ParseRules, Status};
