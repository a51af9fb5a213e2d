//! A short run of the load generator against the gateway binary and Tansu:
//! every postback answered `OK` must be in the topic exactly once, and
//! nothing the gateway refused or called a duplicate may be there.
use crate::common;
use std::path::Path;

use crate::common::process::{GatewayProcess, Tansu};
use crate::common::API_KEY;
use postback_load::scenario::Scenario;
use postback_load::{Kafka, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_load_run_delivers_every_accepted_postback_exactly_once() {
    let tansu = Tansu::start();
    let gw = GatewayProcess::start(Some(&tansu.brokers), &[]).await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("load-tests/scenarios/smoke.toml");
    let settings = Settings {
        scenario: Scenario::from_file(&path).unwrap(),
        target: gw.public,
        api_key: API_KEY.to_owned(),
        pixel_key: common::PIXEL_KEY.to_owned(),
        label: "gateway".to_owned(),
        check_replies: true,
        kafka: Some(Kafka {
            brokers: tansu.brokers.clone(),
            topic: common::TOPIC.to_owned(),
        }),
        pids: vec![gw.child.id()],
        syscalls_csv: None,
        run_id: None,
    };
    let report = tokio::task::spawn_blocking(move || postback_load::run(&settings))
        .await
        .unwrap()
        .expect("the run completes");
    let summary = report.summary();
    let v = report.verification.as_ref().expect("delivery was checked");
    assert!(v.accepted >= 100, "too few postbacks accepted:\n{summary}");
    assert_eq!(v.lost, 0, "{summary}");
    assert_eq!(v.doubled, 0, "{summary}");
    assert_eq!(v.mismatched, 0, "{summary}");
    assert_eq!(v.unexpected, 0, "{summary}");
    assert_eq!(v.delivered_once, v.accepted, "{summary}");
    assert!(report.errors.is_empty(), "{summary}");
    // The mix reached every path: repeats and refusals were answered as such.
    assert!(
        report.outcomes.get("duplicate").copied().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(
        report.outcomes.keys().any(|k| k.starts_with("refused:")),
        "{summary}"
    );
}
