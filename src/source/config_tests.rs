//! Tests of `[sources.*]` config: presets, overrides, and every validation.

use std::collections::BTreeMap;

use super::*;
use crate::config::Config;
use crate::postback::Status;

const KEY: &str = "key-0123456789abcdef";

fn load(toml: &str) -> Result<Config, Vec<String>> {
    let env: BTreeMap<String, String> =
        [("KAFKA_BROKERS".to_owned(), "embedded".to_owned())].into();
    Config::from_toml(toml, &env).map_err(|e| e.0)
}

fn problems(toml: &str) -> Vec<String> {
    load(toml).err().unwrap_or_default()
}

fn source(toml: &str, name: &str) -> Arc<Source> {
    let c = load(toml).unwrap_or_else(|e| panic!("{e:#?}"));
    c.sources.unwrap().get(name).unwrap().clone()
}

#[test]
fn no_sources_means_the_default_source() {
    assert!(load("").unwrap().sources.is_none());
}

#[test]
fn the_sample_config_is_valid() {
    let c = load(include_str!("../../deploy/sources.example.toml")).unwrap_or_else(|e| {
        panic!("{e:#?}");
    });
    assert!(c.sources.unwrap().len() >= 4);
}

#[test]
fn every_preset_builds_from_two_lines() {
    for name in presets::names() {
        let s = source(
            &format!("[sources.s]\npreset = \"{name}\"\napi_keys = [\"{KEY}\"]\n"),
            "s",
        );
        assert_eq!(&*s.platform, name);
        assert_eq!(s.rules, presets::preset(name).unwrap().rules, "{name}");
    }
}

#[test]
fn a_source_overrides_its_preset() {
    let s = source(
        &format!(
            r#"
[sources.acme]
preset = "affise"
platform = "affise-eu"
api_keys = ["{KEY}", "{KEY}-new"]
hosts = ["Track.Acme.example"]
allow_networks = ["203.0.113.0/24"]
trusted_proxies = ["10.0.0.1"]
conversion_time = "click"
plus_as_space = true
currency = "eur"
pixels = true
pixel_keys = ["{KEY}-pixel"]
tracking_template = true
statuses = {{ Approved = "approved", Hold = "pending", "3" = "declined" }}
[sources.acme.params]
tracking = ["click", "click2"]
campaign_id = "cmp"
adset_id = "adset"
ad_id = "ad"
placement = "pl"
[sources.acme.amount]
max_decimals = 4
allow_negative = true
max = "500.00"
[sources.acme.macros]
tracking = "{{sub2}}"
"#
        ),
        "acme",
    );
    assert_eq!(&*s.platform, "affise-eu");
    assert_eq!(s.hosts, vec!["track.acme.example"]);
    assert!(s.allow.contains("203.0.113.9".parse().unwrap()));
    assert!(s.trusted_proxies.contains("10.0.0.1".parse().unwrap()));
    assert!(s.conversion_at_click && s.pixels && s.rules.plus_as_space);
    assert_eq!(s.rules.fixed_currency.as_deref(), Some("EUR"));
    assert_eq!(s.rules.names[Role::Tracking], vec!["click", "click2"]);
    assert_eq!(
        s.rules.names[Role::Amount],
        vec!["sum"],
        "kept from the preset"
    );
    assert_eq!(s.rules.names[Role::Placement], vec!["pl"]);
    assert_eq!(s.rules.statuses.get("hold"), Some(&Status::Pending));
    assert_eq!(s.rules.statuses.get("1"), None, "the map is replaced");
    assert_eq!(
        s.rules.amount.format,
        AmountFormat::Decimal {
            min_decimals: 2,
            max_decimals: 4
        }
    );
    assert!(s.rules.amount.allow_negative);
    assert_eq!(s.rules.amount.max.to_string(), "500.00");
    assert_eq!(s.url.macros[0], (Role::Tracking, "{sub2}".to_owned()));
    assert_eq!(s.authenticate(Some(&format!("{KEY}-new"))), Ok(()));
}

/// One bad field per row; each must give exactly one problem naming it.
#[test]
fn every_validation_reports_its_problem() {
    let k = format!("api_keys = [\"{KEY}\"]");
    let rows: Vec<(String, &str)> = vec![
        (format!("[sources.s]\n{k}\nprest = \"cake\""), "unknown field `prest`"),
        (format!("[sources.s]\n{k}\npreset = \"cakes\""), "unknown preset \"cakes\""),
        ("[sources.s]\npreset = \"cake\"".into(), "api_keys is missing"),
        ("[sources.s]\napi_keys = [\"short\"]".into(), "api key #1 must be"),
        ("[sources.s]\napi_keys = [\"has space 0123456789\"]".into(), "api key #1 must be"),
        (format!("[sources.s]\napi_keys = [\"{KEY}\", \"{KEY}\"]"), "listed twice"),
        (format!("[sources.Bad]\n{k}"), "source \"Bad\": a source name"),
        (format!("[sources.s]\n{k}\n[sources.s.params]\ntracking = \"txid\""), "parameter \"txid\" is both tracking and txid"),
        (format!("[sources.s]\n{k}\n[sources.s.params]\ncampaign_id = \"api_key\""), "parameter \"api_key\" is both api_key and campaign_id"),
        (format!("[sources.s]\n{k}\n[sources.s.params]\nclick_id = \"cid\""), "params.click_id is not a role"),
        (format!("[sources.s]\n{k}\n[sources.s.params]\ntracking = []"), "no parameter names the tracking token"),
        (format!("[sources.s]\n{k}\n[sources.s.params]\ntracking = \"\""), "a parameter name is 1 to 64 bytes"),
        (format!("[sources.s]\n{k}\n[sources.s.params]\namount = []"), "the amount is required"),
        (format!("[sources.s]\n{k}\nstatuses = {{ ok = \"good\" }}"), "statuses.\"ok\" = \"good\""),
        (format!("[sources.s]\n{k}\nstatuses = {{ OK = \"approved\", ok = \"declined\" }}"), "listed twice"),
        (format!("[sources.s]\n{k}\ncurrency = \"euro\""), "currency = \"euro\""),
        (format!("[sources.s]\n{k}\n[sources.s.amount]\nformat = \"float\""), "amount.format = \"float\""),
        (format!("[sources.s]\n{k}\n[sources.s.amount]\nmax_decimals = 7"), "amount.max_decimals = 7"),
        (format!("[sources.s]\n{k}\n[sources.s.amount]\nformat = \"cents\"\nmax_decimals = 3"), "does not apply to cents"),
        (format!("[sources.s]\n{k}\n[sources.s.amount]\nmax = \"-1\""), "amount.max = \"-1\""),
        (format!("[sources.s]\n{k}\n[sources.s.amount]\nmax = 5"), "invalid type"),
        (format!("[sources.s]\n{k}\nallow_networks = [\"10.0.0.0/33\"]"), "allow_networks: \"10.0.0.0/33\""),
        (format!("[sources.s]\n{k}\ntrusted_proxies = [\"10.0.0.1/8\"]"), "did you mean 10.0.0.0/8"),
        (format!("[sources.s]\n{k}\nhosts = [\"https://x.example\"]"), "is not a host name"),
        (format!("[sources.s]\n{k}\nconversion_time = \"visit\""), "unknown variant `visit`"),
        (format!("[sources.s]\n{k}\n[sources.s.macros]\nsubid = \"{{x}}\""), "macros.subid is not a role"),
        (format!("[sources.s]\n{k}\nnetwork = \"cakes\""), "unknown network \"cakes\""),
        ("[sources.s]\napi_keys = []\nkey_in_path = true".into(), "key_in_path needs"),
        (format!("[sources.s]\n{k}\n[sources.s.params]\napi_key = []"), "no parameter to carry them"),
        (format!("api_key = \"x\"\n[sources.s]\n{k}"), "with sources, give each one its api_keys"),
        (format!("[sources.a]\n{k}\nhosts = [\"t.example\"]\n[sources.b]\napi_keys = []\nhosts = [\"T.example\"]"), "host \"t.example\" selects both"),
        (format!("[sources.a]\n{k}\npreset = \"keitaro\"\n[sources.b]\n{k}\npreset = \"keitaro\""), "share an api key"),
    ];
    for (toml, expected) in rows {
        let p = problems(&toml);
        assert_eq!(p.len(), 1, "{toml}\n=> {p:#?}");
        assert!(
            p[0].contains(expected),
            "{toml}\n=> {p:#?}\nexpected {expected:?}"
        );
    }
}

#[test]
fn a_tracking_template_names_each_missing_id() {
    let p = problems(&format!(
        "[sources.t]\napi_keys = [\"{KEY}\"]\ntracking_template = true\n[sources.t.params]\nadset_id = \"as\"\n"
    ));
    assert_eq!(p.len(), 3, "{p:#?}");
    for id in ["campaign_id", "ad_id", "placement"] {
        assert!(
            p.iter()
                .any(|m| m.contains("source t: declares a tracking template")
                    && m.contains(&format!("parameter for {id} "))),
            "{id}: {p:#?}"
        );
    }
    // TUNE maps campaign_id (offer_id) itself; three remain.
    let p = problems(&format!(
        "[sources.t]\npreset = \"tune\"\napi_keys = [\"{KEY}\"]\ntracking_template = true\n"
    ));
    assert_eq!(p.len(), 3, "{p:#?}");
}

#[test]
fn every_problem_of_every_source_is_reported_at_once() {
    let p = problems(&format!(
        r#"
[kafka]
delivery_wait_ms = 1
[sources.a]
preset = "nope"
api_keys = ["short"]
[sources.b]
api_keys = ["{KEY}"]
tracking_template = true
allow_networks = ["x"]
[sources.b.params]
status = "tracking"
[sources.c]
api_keys = ["{KEY}"]
unknown = 1
"#
    ));
    assert_eq!(p.len(), 1 + 2 + 6 + 1, "{p:#?}");
}

#[test]
fn a_source_named_default_serves_plain_requests() {
    let c = load(&format!("[sources.default]\napi_keys = [\"{KEY}\"]\n")).unwrap();
    let s = c.sources.unwrap();
    assert_eq!(&*s.select(None, None).unwrap().name, "default");
    let c = load(&format!("[sources.x]\napi_keys = [\"{KEY}\"]\n")).unwrap();
    assert!(c.sources.unwrap().select(None, None).is_err());
}

#[test]
fn a_source_lists_placeholders_of_its_own() {
    let s = source(
        &format!(
            "[sources.acme]\napi_keys = [\"{KEY}\"]\nextra_placeholders = [\"-\", \"no_click\"]\n"
        ),
        "acme",
    );
    assert_eq!(s.rules.extra_placeholders, vec!["-", "no_click"]);
    let bad = problems(&format!(
        "[sources.acme]\napi_keys = [\"{KEY}\"]\nextra_placeholders = [\"\"]\n"
    ));
    assert!(
        bad.iter().any(|p| p.contains("extra_placeholders")),
        "{bad:?}"
    );
}

#[test]
fn amount_shapes_and_unknown_statuses_are_set_per_source() {
    let s = source(
        &format!(
            "[sources.acme]\napi_keys = [\"{KEY}\"]\nunknown_status = \"accept\"\nclick_time_zone = \"-05:00\"\n             [sources.acme.amount]\nmin_decimals = 0\nmax_decimals = 3\nrequired = false\nunreadable = \"keep\"\n"
        ),
        "acme",
    );
    assert_eq!(
        s.rules.amount.format,
        AmountFormat::Decimal {
            min_decimals: 0,
            max_decimals: 3
        }
    );
    assert!(s.rules.accept_unknown_status);
    assert!(!s.rules.amount.required);
    assert!(s.rules.amount.keep_unreadable);
    assert_eq!(
        s.rules.click_time_zone,
        Some(time::UtcOffset::from_hms(-5, 0, 0).unwrap())
    );
    assert_eq!(
        source(
            &format!("[sources.acme]\napi_keys = [\"{KEY}\"]\nclick_time_zone = \"UTC\"\n"),
            "acme"
        )
        .rules
        .click_time_zone,
        Some(time::UtcOffset::UTC)
    );
    for (toml, problem) in [
        ("unknown_status = \"maybe\"", "unknown_status"),
        ("click_time_zone = \"Europe/Paris\"", "click_time_zone"),
        (
            "dedup_fields = [\"txid\", \"price\"]",
            "dedup_fields: \"price\"",
        ),
        ("click_time_zone = \"+2\"", "click_time_zone"),
        (
            "[sources.acme.amount]\nunreadable = \"zero\"",
            "amount.unreadable",
        ),
        (
            "[sources.acme.amount]\nmin_decimals = 3",
            "min_decimals = 3",
        ),
    ] {
        let bad = problems(&format!("[sources.acme]\napi_keys = [\"{KEY}\"]\n{toml}\n"));
        assert!(bad.iter().any(|p| p.contains(problem)), "{toml}: {bad:?}");
    }
}

#[test]
fn keyed_sources_take_pixels_only_with_pixel_keys_and_keyless_ones_no_s2s() {
    // The reference and Voluum presets fire pixels, but a keyed source
    // takes none unless it has pixel keys.
    for preset in ["reference", "voluum"] {
        let s = source(
            &format!("[sources.a]\npreset = \"{preset}\"\napi_keys = [\"{KEY}\"]\n"),
            "a",
        );
        assert!(!s.pixels, "{preset}");
        let s = source(
            &format!(
                "[sources.a]\npreset = \"{preset}\"\napi_keys = [\"{KEY}\"]\npixel_keys = [\"{KEY}-px\"]\n"
            ),
            "a",
        );
        assert!(s.pixels, "{preset}");
    }
    for (toml, problem) in [
        (
            format!("api_keys = [\"{KEY}\"]\npixels = true"),
            "needs pixel_keys",
        ),
        (
            format!("api_keys = [\"{KEY}\"]\npixel_keys = [\"{KEY}\"]"),
            "is also an api key",
        ),
        (
            format!("api_keys = [\"{KEY}\"]\ns2s_without_key = true"),
            "for sources without api keys",
        ),
    ] {
        let bad = problems(&format!("[sources.a]\n{toml}\n"));
        assert!(bad.iter().any(|p| p.contains(problem)), "{toml}: {bad:?}");
    }
    let c = load("[sources.a]\napi_keys = []\npixels = true\ns2s_without_key = true\n").unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("without a key")),
        "{:?}",
        c.warnings
    );
    let c = load("[sources.a]\napi_keys = []\npixels = true\n").unwrap();
    assert!(c.warnings.is_empty());
}

#[test]
fn a_source_may_have_a_dedup_share_of_its_own_within_the_bound() {
    let s = source(
        &format!("[sources.a]\napi_keys = [\"{KEY}\"]\ndedup_max_keys = 5000\n"),
        "a",
    );
    assert_eq!(s.dedup_max_keys, Some(5000));
    let bad = problems(&format!(
        "[dedup]\nmax_keys = 10000\n[sources.a]\napi_keys = [\"{KEY}\"]\ndedup_max_keys = 9500\n"
    ));
    assert!(bad.iter().any(|p| p.contains("leave nothing")), "{bad:?}");
}
