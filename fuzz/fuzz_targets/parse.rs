//! Coverage-guided fuzzing of the strict parser: any bytes as a query and a
//! form, flat JSON or nested JSON body, under each of the shared property's
//! sets of rules (`postback_gateway::postback::check`, which the property
//! tests run too). Beyond "no panic", what is accepted must be what was sent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| postback_gateway::postback::check::check_bytes(data));
