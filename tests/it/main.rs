//! The integration tests, in one binary: black-box tests of the gateway
//! binary and of the library over real sockets, against the embedded mock
//! cluster, Tansu, nginx and Chromium (docs/development.md lists the tiers).
//! One module per concern; `common` holds what they share. nextest runs
//! each test in a process of its own.

mod common;

mod browser;
mod chaos;
mod check_config;
mod cli;
mod console;
mod crash;
mod deploy;
mod disk_full;
mod docs;
mod event_schema;
mod faults;
mod first_run;
mod hostile;
mod layout;
mod limits;
mod load_smoke;
mod logs;
mod mock_cluster;
mod outage;
mod outage_start;
mod placeholders;
mod platforms;
mod postback_url;
mod presets;
mod properties;
mod readback;
mod reload;
mod scale_out;
mod secure_kafka;
mod secure_kafka_rig;
mod side_by_side;
mod sources_routing;
mod spool_dir;
mod spool_faults;
mod tansu_e2e;
mod test_fire;
