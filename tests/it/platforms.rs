//! Real senders, exactly: a corpus of postbacks as each platform's public
//! documentation shows them (the page is named with every case), sent to the
//! gateway binary with one source per preset, against a real Tansu broker;
//! each reply is checked, and each accepted postback's event is read back from
//! the topic and checked field by field.
use crate::common;
use std::collections::HashMap;
use std::time::Duration;

use crate::common::process::{GatewayProcess, Tansu};
use crate::common::*;
use serde_json::{json, Value};

const KEY: &str = "platform-key-0123456789";

/// One source per preset, named after it.
const CONFIG: &str = r#"
[sources.reference]
api_keys = ["platform-key-0123456789"]
[sources.cake]
preset = "cake"
api_keys = ["platform-key-0123456789"]
[sources.tune]
preset = "tune"
api_keys = ["platform-key-0123456789"]
[sources.nats]
preset = "nats"
api_keys = ["platform-key-0123456789"]
[sources.everflow]
preset = "everflow"
api_keys = ["platform-key-0123456789"]
[sources.voluum]
preset = "voluum"
api_keys = ["platform-key-0123456789"]
[sources.binom]
preset = "binom"
api_keys = ["platform-key-0123456789"]
[sources.keitaro]
preset = "keitaro"
api_keys = ["platform-key-0123456789"]
[sources.kintura]
preset = "kintura"
api_keys = ["platform-key-0123456789"]
[sources.redtrack]
preset = "redtrack"
api_keys = ["platform-key-0123456789"]
[sources.affise]
preset = "affise"
api_keys = ["platform-key-0123456789"]
[sources.bemob]
preset = "bemob"
api_keys = ["platform-key-0123456789"]
[sources.peerclick]
preset = "peerclick"
api_keys = ["platform-key-0123456789"]
# Branch's webhook, its default POST body read by JSON paths; the link data
# key that carries the click id is the operator's (here `click_id`).
[sources.branch_webhook]
api_keys = ["platform-key-0123456789"]
json = "nested"
params = { api_key = "api_key", tracking = "last_attributed_touch_data.click_id", amount = "event_data.revenue", currency = "event_data.currency", txid = "event_data.transaction_id", goal = "name", click_time = "last_attributed_touch_timestamp" }
amount = { min_decimals = 0, max_decimals = 4 }
# AppsFlyer's Push API: a flat JSON body with booleans and nulls; times in UTC.
[sources.appsflyer_push]
preset = "appsflyer"
api_keys = ["platform-key-0123456789"]
[sources.pap]
preset = "post_affiliate_pro"
api_keys = ["platform-key-0123456789"]
[sources.trackier]
preset = "trackier"
api_keys = ["platform-key-0123456789"]
[sources.impact]
preset = "impact"
api_keys = ["platform-key-0123456789"]
# CAKE's #sourcetime# in a parameter of its own, its zone named by the operator.
[sources.cake_sourcetime]
preset = "cake"
api_keys = ["platform-key-0123456789"]
params = { click_time = "sourcetime" }
click_time_zone = "-05:00"
# Affise's {click_date}, no zone named.
[sources.affise_dated]
preset = "affise"
api_keys = ["platform-key-0123456789"]
params = { click_time = "click_date" }
# RedTrack's "Keep original data, Increment payout" mode: a second sale on
# the same click with another amount is a new conversion.
[sources.redtrack_increment]
preset = "redtrack"
api_keys = ["platform-key-0123456789"]
dedup_fields = ["txid", "goal", "status", "amount"]
"#;

/// What a case expects.
enum Want {
    /// 200 OK, and an event with these fields (token, source and kind are
    /// always checked; every field named here must match, `null` included).
    Event(Value),
    /// This status and `ERROR <reason>`.
    Refused(u16, &'static str),
    /// 200 `IGNORED`, and no event.
    Ignored,
}

struct Case {
    /// The page the postback is copied from.
    doc: &'static str,
    source: &'static str,
    /// Path and query; `{T}` is the token, `{K}` the key.
    url: &'static str,
    /// A POST body (NATS posts a form, Branch and AppsFlyer JSON), with the
    /// same placeholders, and its content type.
    form: Option<&'static str>,
    content_type: &'static str,
    want: Want,
}

fn cases() -> Vec<Case> {
    use Want::{Event, Ignored, Refused};
    let c = |doc, source, url, want| Case {
        doc,
        source,
        url,
        form: None,
        content_type: "",
        want,
    };
    let nats = |doc, body, want| Case {
        doc,
        source: "nats",
        url: "/postback/nats?api_key={K}",
        form: Some(body),
        content_type: "application/x-www-form-urlencoded",
        want,
    };
    let json = |doc, source, url, body, want| Case {
        doc,
        source,
        url,
        form: Some(body),
        content_type: "application/json",
        want,
    };
    const REFERENCE: &str = "docs/http-api.md (the reference format)";
    const CAKE: &str = "https://support.getcake.com/en/support/solutions/articles/5000546096";
    const TUNE: &str =
        "https://support.tune.com/hc/en-us/articles/1500005137081-Basics-of-Parameters-and-Macros";
    const NATS: &str = "https://tmmwiki.com/index.php/NATS4_Post_URLs";
    const NATS_FULL: &str = "https://docs.toomuchmedia.com/nats-admin/sites/further-reading/postbacks-and-post-urls/post-urls";
    const NATS_TYPES: &str =
        "https://tmmwiki.com/index.php?diff=11614&oldid=11577&title=NATS4_Post_URLs";
    const EVERFLOW: &str = "https://helpdesk.everflow.io/en/articles/3673712-offer-revenue-payout";
    const VOLUUM: &str = "https://doc.voluum.com/en/submitting_postback_url.html";
    const VOLUUM_UPSELL: &str = "https://doc.voluum.com/en/upselling.html";
    const VOLUUM_ET: &str = "https://doc.voluum.com/en/custom_conversions.html";
    const BINOM: &str = "https://docs.binom.org/postback-url.php";
    const BINOM_PAYOUT: &str = "https://docs.binom.org/payout-tracking-v2.php";
    const KEITARO: &str = "https://docs.keitaro.io/en/conversions/postback.html";
    const KINTURA: &str = "https://kintura.com/docs/presets/pairings/clickadu/clickbooth";
    const KINTURA_OFFERS: &str = "https://kintura.com/docs/offers";
    const REDTRACK: &str = "https://docs.redtrack.io/knowledgebase/tracking-event-types/";
    const AFFISE: &str =
        "https://help-center.affise.com/en/articles/6483741-affiliate-postback-url-macros";
    const CAKE_S2S: &str = "https://support.getcake.com/support/solutions/articles/5000546059-how-to-implement-server-to-server-tracking-using-a-postback-url";
    const TUNE_AMOUNT: &str =
        "https://support.tune.com/hc/en-us/articles/1500007722601-Recording-Sale-Amount-upon-Conversion";
    const CAKE_TOKENS: &str = "https://support.getcake.com/support/solutions/articles/5000545788";
    const BRANCH_MACROS: &str = "https://help.branch.io/developer-hub/postback-macros-functions";
    const BEMOB_STATUSES: &str = "https://help.bemob.com/docs/using-postback-statuses";
    const BEMOB_MONETIZER: &str = "https://docs.bemob.com/en/monetizer-settings";
    const BEMOB_NETWORK: &str = "https://docs.bemob.com/en/postback-settings-of-affiliate-network";
    const ADJUST_REVENUE: &str = "https://help.adjust.com/en/article/ad-revenue-callbacks";
    const BRANCH_WEBHOOKS: &str =
        "https://help.branch.io/developer-hub/data-integration-webhooks-for-developers";
    const APPSFLYER_PUSH: &str = "https://support.appsflyer.com/hc/en-us/articles/207034356";
    const PAP_PIXEL: &str = "https://support.qualityunit.com/687297-Pixel-tracking-HTML-image";
    const PAP_SALE: &str =
        "https://support.qualityunit.com/038895-Sale-action-tracking-request-data-description";
    const PEERCLICK: &str = "https://help-center.peerclick.com/en/articles/10512589";
    const TRACKIER: &str =
        "https://help.trackier.com/en/articles/8107277-key-parameters-for-setting-up-advertiser-postback";
    const TRACKIER_OLD: &str =
        "https://help.trackier.com/en/articles/8107277-parameters-for-advertiser-postback";
    const IMPACT_CLEARING: &str = "https://help.impact.com/en/support/solutions/articles/155000000882-enable-action-clearing-events-notifications";
    const IMPACT_GET: &str = "https://integrations.impact.com/partner-api-reference/partner-v15/reference/webhooks/event-notifications";
    const IMPACT_STATES: &str =
        "https://integrations.impact.com/impact-brand/reference/the-action-update-object";
    let nats_form = "passthrough1={T}&transaction%5Btransaction_id%5D=1-{T}&transaction%5Bamount%5D=2995&transaction%5Bbiller_amount%5D=2995&transaction%5Bbiller_currency%5D=USD&transaction%5Bexchange_rate%5D=1&post_type=";
    vec![
        // The reference format keeps the strict 0.00 grammar.
        c(REFERENCE, "reference", "/postback/reference?api_key={K}&tracking={T}&amount=12.34",
          Event(json!({"amount": "12.34", "status": "approved", "status_raw": null, "currency": null}))),
        c(REFERENCE, "reference", "/postback/reference?api_key={K}&tracking={T}&amount=100", Refused(400, "bad_amount")),
        c(REFERENCE, "reference", "/postback/reference?api_key={K}&tracking={T}&amount=12,34", Refused(400, "bad_amount")),
        c(REFERENCE, "reference", "/postback/reference?api_key={K}&tracking={T}&amount=1.5", Refused(400, "bad_amount")),
        c(REFERENCE, "reference", "/postback/reference?api_key={K}&tracking={T}&amount=012.00", Refused(400, "bad_amount")),
        // CAKE fills #s2# with the click id, #price#, #leadid#, #oid#.
        c(CAKE, "cake", "/postback/cake?api_key={K}&r={T}&p=12.50&t=LEAD-1&o=231",
          Event(json!({"amount": "12.50", "txid": "LEAD-1", "campaign_id": "231", "status": "approved"}))),
        c(CAKE, "cake", "/postback/cake?api_key={K}&r={T}&p=0.75", Event(json!({"amount": "0.75", "txid": null}))),
        // #s2# left unfilled and encoded, or cut off as a fragment by a browser.
        c(CAKE, "cake", "/postback/cake?api_key={K}&r=%23s2%23&p=1.00", Refused(400, "unfilled_macro")),
        c(CAKE, "cake", "/postback/cake?api_key={K}&r=&p=1.00", Refused(400, "missing_tracking")),
        // TUNE's conversion endpoint: transaction_id is TUNE's click id.
        c(TUNE, "tune", "/postback/tune?offer_id=1001&transaction_id={T}&amount=10.00&security_token={K}",
          Event(json!({"amount": "10.00", "campaign_id": "1001", "txid": null, "goal": null}))),
        c(TUNE, "tune", "/postback/tune?offer_id=1001&transaction_id={T}&amount=2.40&goal_id=3&security_token={K}",
          Event(json!({"amount": "2.40", "goal": "3"}))),
        c(TUNE, "tune", "/postback/tune?offer_id=1001&transaction_id={T}&amount=10.00", Refused(401, "missing_api_key")),
        c(TUNE, "tune", "/postback/tune?offer_id=1001&transaction_id={T}&amount=10.00&security_token=wrong-key-000000000", Refused(403, "bad_api_key")),
        // NATS posts a form; post_type is the event; amounts in cents.
        nats(NATS, "passthrough1={T}&transaction%5Btransaction_id%5D=1-{T}&transaction%5Bamount%5D=2995&transaction%5Bbiller_amount%5D=2995&transaction%5Bbiller_currency%5D=USD&transaction%5Bexchange_rate%5D=1&transaction%5Btotal_transaction_payout%5D=1497&post_type=approvalpost",
          Event(json!({"amount": "29.95", "currency": "USD", "status": "approved", "status_raw": "approvalpost"}))),
        // The whole approval post as documented: about 90 fields, the member's
        // password and email among them. Only the listed fields pass through.
        nats(NATS_FULL, "memberid=796&identid=34&loginid=1&networkid=0&refurl_lookup_id=9&status=1&trial=1&joined=1262047950&expired=0&last_login=0&stamp=1262047950&siteid=1&username=approvalpost4&password=password&cryptpass=a4sLkn7C9GP12&ip=1264826090&email=approval%40post.com&session=2543fce3968fac6eeb94cf0ba8f79c33&mailok=1&flat_price=0&first_login=0&third_party_partner_id=0&cascadeid=1&cascade_item_id=23&token=0&original_username=approvalpost4&renamed=0&marked=0&token_hash=a982a462747406a377a6f3d97572191d&member_subscription_id=466&memberidx=ZOMBAIO%3A1150132&billerid=22&statid=54b3952c068269&cost=0&cost_charge=0&spent=2995&refunded=0&charges=0&next_rebill=1262220750&optionid=3&rebills=0&active=1&expires=1262220750&nats_expires=1262220750&biller_expires=0&original_optionid=3&created_date=1262047936&loginid_assigned=0&identid_assigned=0&passthrough1={T}&passthrough2=passthrough2&passthrough3=passthrough3&passthrough4=passthrough4&passthrough5=passthrough5&defaulted_optionid=0&forced_optionid=0&member_identid=505&member_loginid=2&firstname=asdf&lastname=asdf&address1=asdf&zip=12345&city=dfsdf&state=CA&country=US&xsell_success=0&custom1=custom1&custom2=custom2&custom3=custom3&custom4=custom4&custom5=custom5&last_modified=0&transaction%5Btransaction_id%5D=617-{T}&transaction%5Bbiller_time%5D=1262047950&transaction%5Bserver_time%5D=1262047950&transaction%5Bbiller_transid%5D=ZOMBAIO%3A243621&transaction%5Bamount%5D=2995&transaction%5Bbiller_amount%5D=2995&transaction%5Bbiller_currency%5D=USD&transaction%5Bexchange_rate%5D=1&transaction%5Btrans_type_id%5D=3&transaction%5Bcharges%5D=0&transaction%5Bcharge_deduct%5D=0&transaction%5Bprocess_type%5D=0&transaction%5Btotal_transaction_payout%5D=1497&post_time=1262047950&post_type=approvalpost",
          Event(json!({"amount": "29.95", "currency": "USD", "status": "approved", "txid": "617-{T}",
                       "params": {"memberid": "796", "trial": "1", "siteid": "1", "billerid": "22", "optionid": "3",
                                  "passthrough2": "passthrough2", "passthrough3": "passthrough3",
                                  "passthrough4": "passthrough4", "passthrough5": "passthrough5",
                                  "custom1": "custom1", "custom2": "custom2", "custom3": "custom3",
                                  "custom4": "custom4", "custom5": "custom5",
                                  "transaction[biller_time]": "1262047950", "transaction[biller_transid]": "ZOMBAIO:243621",
                                  "transaction[amount]": "2995", "transaction[exchange_rate]": "1",
                                  "transaction[trans_type_id]": "3", "transaction[total_transaction_payout]": "1497",
                                  "post_time": "1262047950"}}))),
        nats(NATS_TYPES, leak(format!("{nats_form}chargebackpost")),
          Event(json!({"amount": "29.95", "status": "declined", "status_raw": "chargebackpost"}))),
        nats(NATS_TYPES, leak(format!("{nats_form}creditpost")),
          Event(json!({"status": "declined", "status_raw": "creditpost"}))),
        nats(NATS_TYPES, leak(format!("{nats_form}rebillpost")),
          Event(json!({"status": "approved", "status_raw": "rebillpost"}))),
        nats(NATS_TYPES, leak(format!("{nats_form}expirepost")),
          Event(json!({"status": "declined", "status_raw": "expirepost"}))),
        nats(NATS_TYPES, leak(format!("{nats_form}somethingnew")), Refused(400, "bad_status")),
        // Everflow: transaction_id is its click id; whole-dollar amounts.
        c(EVERFLOW, "everflow", "/postback/everflow?nid=23452&transaction_id={T}&amount=100&verification_token={K}",
          Event(json!({"amount": "100.00", "params": {"nid": "23452"}}))),
        c(EVERFLOW, "everflow", "/postback/everflow?transaction_id={T}&amount=75&order_id=ORD-9&currency=usd&verification_token={K}",
          Event(json!({"amount": "75.00", "txid": "ORD-9", "currency": "USD"}))),
        c(EVERFLOW, "everflow", "/postback/everflow?transaction_id={T}&amount=12.34&event_id=5&verification_token={K}",
          Event(json!({"amount": "12.34", "goal": "5"}))),
        // A decimal comma: none of Everflow's own pages at hand says how
        // Everflow reads it, so the preset keeps the strict dot rule (a comma
        // is also a thousands separator elsewhere) and refuses it by name.
        c(EVERFLOW, "everflow", "/postback/everflow?transaction_id={T}&amount=12,34&verification_token={K}", Refused(400, "bad_amount")),
        // Voluum: cid required, payout and txid optional.
        c(VOLUUM_UPSELL, "voluum", "/postback/voluum?api_key={K}&cid={T}&payout=10.00&txid=120",
          Event(json!({"amount": "10.00", "txid": "120"}))),
        c(VOLUUM, "voluum", "/postback/voluum?api_key={K}&cid={T}", Event(json!({"amount": null, "txid": null}))),
        c(VOLUUM, "voluum", "/postback/voluum?api_key={K}&cid={T}&payout=5", Event(json!({"amount": "5.00"}))),
        c(VOLUUM_ET, "voluum", "/postback/voluum?api_key={K}&cid={T}&payout=1.00&txid=SIGNUP&et=install",
          Event(json!({"amount": "1.00", "txid": "SIGNUP", "goal": "install"}))),
        c(VOLUUM, "voluum", "/postback/voluum?api_key={K}&cid=REPLACE&payout=OPTIONAL", Refused(400, "unfilled_macro")),
        // Binom: payout=5, cnv_status free text (Hold, approve, reject, ...).
        c(BINOM_PAYOUT, "binom", "/postback/binom?api_key={K}&cnv_id={T}&payout=5", Event(json!({"amount": "5.00", "status": "approved"}))),
        c(BINOM_PAYOUT, "binom", "/postback/binom?api_key={K}&cnv_id={T}&payout=5&cnv_status=Hold",
          Event(json!({"status": "pending", "status_raw": "Hold"}))),
        c(BINOM, "binom", "/postback/binom?api_key={K}&cnv_id={T}&payout=2.5&cnv_status=approve",
          Event(json!({"amount": "2.50", "status": "approved", "status_raw": "approve"}))),
        c(BINOM, "binom", "/postback/binom?api_key={K}&cnv_id={T}&cnv_status=reject",
          Event(json!({"amount": null, "status": "declined", "status_raw": "reject"}))),
        c(BINOM, "binom", "/postback/binom?api_key={K}&cnv_id={T}&cnv_status=signup&cnv_currency=EUR",
          Event(json!({"status": "other", "status_raw": "signup", "currency": "EUR"}))),
        // Keitaro: the key in the path; status defaults to sale.
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&status=lead&payout=10&currency=EUR",
          Event(json!({"amount": "10.00", "currency": "EUR", "status": "pending", "status_raw": "lead"}))),
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&status=sale&payout=21.0",
          Event(json!({"amount": "21.00", "status": "approved", "status_raw": "sale"}))),
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&payout=3", Event(json!({"amount": "3.00", "status": "approved", "status_raw": null}))),
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&status=rejected", Event(json!({"amount": null, "status": "declined"}))),
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&status=rebill&tid=2&revenue=9.99&currency=eur",
          Event(json!({"amount": "9.99", "txid": "2", "status": "approved", "currency": "EUR"}))),
        // Kintura: payout or amount, optional.
        c(KINTURA, "kintura", "/postback/kintura?api_key={K}&cid={T}&payout=2.5&txid=T-1",
          Event(json!({"amount": "2.50", "txid": "T-1"}))),
        c(KINTURA_OFFERS, "kintura", "/postback/kintura?api_key={K}&cid={T}&amount=3", Event(json!({"amount": "3.00"}))),
        c(KINTURA_OFFERS, "kintura", "/postback/kintura?api_key={K}&cid={T}", Event(json!({"amount": null}))),
        c(KINTURA, "kintura", "/postback/kintura?api_key={K}&cid={T}&status=lead",
          Event(json!({"status": "pending", "status_raw": "lead"}))),
        // RedTrack: sum optional; statuses Other, Approved, Pending, Declined.
        c(REDTRACK, "redtrack", "/postback/redtrack?api_key={K}&clickid={T}&sum=12.5&type=Deposit",
          Event(json!({"amount": "12.50", "goal": "Deposit"}))),
        c(REDTRACK, "redtrack", "/postback/redtrack?api_key={K}&clickid={T}&status=Other",
          Event(json!({"amount": null, "status": "other", "status_raw": "Other"}))),
        c(REDTRACK, "redtrack", "/postback/redtrack?api_key={K}&clickid={T}&sum=4&status=Declined",
          Event(json!({"amount": "4.00", "status": "declined"}))),
        c(REDTRACK, "redtrack", "/postback/redtrack?api_key={K}&clickid={T}&sum=4&status=Approved&type=Upsell",
          Event(json!({"status": "approved", "goal": "Upsell"}))),
        // Affise: status 1/2/3/5, {sum}, {transactionid}.
        c(AFFISE, "affise", "/postback/affise?secure={K}&clickid={T}&sum=1.50&action_id=A-1&goal=2&status=1",
          Event(json!({"amount": "1.50", "txid": "A-1", "goal": "2", "status": "approved", "status_raw": "1"}))),
        c(AFFISE, "affise", "/postback/affise?secure={K}&clickid={T}&sum=1.50&status=2", Event(json!({"status": "pending"}))),
        c(AFFISE, "affise", "/postback/affise?secure={K}&clickid={T}&sum=1.50&status=3", Event(json!({"status": "declined"}))),
        c(AFFISE, "affise", "/postback/affise?secure={K}&clickid={T}&sum=1.50&status=5", Event(json!({"status": "pending", "status_raw": "5"}))),
        c(AFFISE, "affise", "/postback/affise?secure={K}&clickid={T}&sum=1.50&status=4", Refused(400, "bad_status")),
        // CAKE stores a conversion for a valid request id alone: no price.
        c(CAKE_S2S, "cake", "/postback/cake?api_key={K}&o=231&e=5&r={T}",
          Event(json!({"amount": null, "campaign_id": "231", "goal": "5", "params": {}}))),
        // TUNE keeps a conversion without an amount, or with a malformed one
        // (its report shows 0.00): kept as sent, the amount null.
        c(TUNE_AMOUNT, "tune", "/postback/tune?offer_id=1&transaction_id={T}&security_token={K}",
          Event(json!({"amount": null, "campaign_id": "1", "params": {}}))),
        c(TUNE_AMOUNT, "tune", "/postback/tune?offer_id=1&transaction_id={T}&amount=12,50&security_token={K}",
          Event(json!({"amount": null, "params": {"amount": "12,50"}}))),
        c(TUNE_AMOUNT, "tune", "/postback/tune?offer_id=1&transaction_id={T}&amount=50.00&security_token={K}",
          Event(json!({"amount": "50.00", "params": {}}))),
        // Placeholders in every role, each refused under its role's name:
        // TUNE's own template `amount=AMOUNT`, Everflow's `TRANSACTION_ID`
        // and `AMOUNT`, a Binom status macro left in, Voluum's OPTIONAL.
        c(TUNE_AMOUNT, "tune", "/postback/tune?offer_id=1&transaction_id={T}&amount=AMOUNT&security_token={K}",
          Refused(400, "unfilled_amount")),
        c(EVERFLOW, "everflow", "/postback/everflow?nid=23452&transaction_id=TRANSACTION_ID&amount=AMOUNT&verification_token={K}",
          Refused(400, "unfilled_macro")),
        c(EVERFLOW, "everflow", "/postback/everflow?nid=23452&transaction_id={T}&amount=AMOUNT&verification_token={K}",
          Refused(400, "unfilled_amount")),
        c(BINOM, "binom", "/postback/binom?api_key={K}&cnv_id={T}&payout=5&cnv_status=%7Bstatus%7D", Refused(400, "unfilled_status")),
        c(BINOM, "binom", "/postback/binom?api_key={K}&cnv_id={T}&payout=5&cnv_currency=%7Bcurrency%7D", Refused(400, "unfilled_currency")),
        c(VOLUUM, "voluum", "/postback/voluum?api_key={K}&cid={T}&payout=OPTIONAL&txid=OPTIONAL", Refused(400, "unfilled_amount")),
        c(VOLUUM, "voluum", "/postback/voluum?api_key={K}&cid={T}&txid=%7Btransaction_id%7D", Refused(400, "unfilled_txid")),
        c(VOLUUM_ET, "voluum", "/postback/voluum?api_key={K}&cid={T}&et=%5B%5Bevent%5D%5D", Refused(400, "unfilled_goal")),
        c(CAKE, "cake", "/postback/cake?api_key={K}&r={T}&p=%23price%23", Refused(400, "unfilled_amount")),
        c(CAKE, "cake", "/postback/cake?api_key={K}&r={T}&o=%23oid%23", Refused(400, "unfilled_campaign_id")),
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&status=%7Bstatus%7D", Refused(400, "unfilled_status")),
        c(AFFISE, "affise", "/postback/affise?secure={K}&clickid={T}&sum=1.50&action_id=%7Btransactionid%7D", Refused(400, "unfilled_txid")),
        // A sender's reject in a status the format does not read is never
        // filed as approved: Voluum, TUNE, CAKE and Everflow read no status.
        c(VOLUUM, "voluum", "/postback/voluum?api_key={K}&cid={T}&payout=1.00&status=reject",
          Event(json!({"status": "declined", "status_raw": "reject", "params": {"status": "reject"}}))),
        c(TUNE_AMOUNT, "tune", "/postback/tune?offer_id=1&transaction_id={T}&amount=5.00&status=rejected&security_token={K}",
          Event(json!({"status": "declined", "status_raw": "rejected"}))),
        c(CAKE_S2S, "cake", "/postback/cake?api_key={K}&r={T}&p=1.00&status=Chargeback",
          Event(json!({"status": "declined", "status_raw": "Chargeback"}))),
        c(EVERFLOW, "everflow", "/postback/everflow?transaction_id={T}&amount=10&status=refunded&verification_token={K}",
          Event(json!({"status": "declined", "status_raw": "refunded"}))),
        c(VOLUUM, "voluum", "/postback/voluum?api_key={K}&cid={T}&payout=1.00&status=approved",
          Event(json!({"status": "approved", "status_raw": null, "params": {"status": "approved"}}))),
        // Click times as platforms send them never cost the conversion: CAKE's
        // #sourcetime# ("2013-11-12T13:04:27.5670000", no zone) is kept as
        // sent unless the source names its zone; Affise's {click_date} ("y-m-d
        // h:i:s"); Branch's millisecond timestamps, by their 13 digits.
        c(CAKE_TOKENS, "reference", "/postback/reference?api_key={K}&tracking={T}&amount=1.00&click_time=2013-11-12T13:04:27.5670000",
          Event(json!({"click_time": null, "params": {"click_time": "2013-11-12T13:04:27.5670000"}}))),
        c(CAKE_TOKENS, "cake_sourcetime", "/postback/cake_sourcetime?api_key={K}&r={T}&p=1.00&sourcetime=2013-11-12T13:04:27.5670000",
          Event(json!({"click_time": "2013-11-12T18:04:27.567Z", "params": {}}))),
        c(AFFISE, "affise_dated", "/postback/affise_dated?secure={K}&clickid={T}&sum=1.50&click_date=2021-09-17%2001:29:11",
          Event(json!({"click_time": null, "params": {"click_date": "2021-09-17 01:29:11"}}))),
        c(BRANCH_MACROS, "reference", "/postback/reference?api_key={K}&tracking={T}&amount=1.00&click_time=1631842151653",
          Event(json!({"click_time": "2021-09-17T01:29:11.653Z", "params": {}}))),
        c(REFERENCE, "reference", "/postback/reference?api_key={K}&tracking={T}&amount=1.00&click_time=yesterday",
          Event(json!({"click_time": null, "params": {"click_time": "yesterday"}}))),
        c(REFERENCE, "reference", "/postback/reference?api_key={K}&tracking={T}&amount=1.00&click_time=%7Bclick_time%7D",
          Event(json!({"click_time": null, "params": {}}))),
        c(REFERENCE, "reference", "/postback/reference?api_key={K}&tracking={T}&amount=1.00&click_time=2024-01-02T03:04:05%2B02:00",
          Event(json!({"click_time": "2024-01-02T01:04:05.000Z", "params": {}}))),
        // Keitaro translates the network's words per postback and ignores
        // the ones it is told to; the word sent stays in status_raw.
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&status=billed&sale_status=billed&payout=5",
          Event(json!({"status": "approved", "status_raw": "billed", "amount": "5.00", "params": {"sale_status": "billed"}}))),
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&status=topup&lead_status=reg,topup",
          Event(json!({"status": "pending", "status_raw": "topup"}))),
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&status=Fake&rejected_status=canceled,fake&lead_status=reg",
          Event(json!({"status": "declined", "status_raw": "Fake"}))),
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&status=ping&ignore_status=ping,test", Ignored),
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&status=test&ignore_status=ping,%20test&payout=junk", Ignored),
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&status=billed", Refused(400, "bad_status")),
        c(KEITARO, "keitaro", "/{K}/postback?subid={T}&status=billed&lead_status=reg", Refused(400, "bad_status")),
        // BeMob: Voluum's format with the network's own status words; the
        // template's OPTIONAL left in is refused, never filed as a status.
        c(BEMOB_STATUSES, "bemob", "/postback/bemob?api_key={K}&cid={T}&payout=2.50&status=lead",
          Event(json!({"amount": "2.50", "status": "pending", "status_raw": "lead"}))),
        c(BEMOB_STATUSES, "bemob", "/postback/bemob?api_key={K}&cid={T}&payout=2.50&status=hold",
          Event(json!({"status": "pending", "status_raw": "hold"}))),
        c(BEMOB_STATUSES, "bemob", "/postback/bemob?api_key={K}&cid={T}&status=reject",
          Event(json!({"amount": null, "status": "declined", "status_raw": "reject"}))),
        c(BEMOB_MONETIZER, "bemob", "/postback/bemob?api_key={K}&cid={T}&payout=1.00&txid=T-9",
          Event(json!({"txid": "T-9", "status": "approved", "status_raw": null}))),
        c(BEMOB_MONETIZER, "bemob", "/postback/bemob?api_key={K}&cid={T}&payout=1.00&txid=T-9&status=OPTIONAL",
          Refused(400, "unfilled_status")),
        c(BEMOB_NETWORK, "bemob", "/postback/bemob?api_key={K}&cid=REPLACE&payout=OPTIONAL&txid=OPTIONAL&status=OPTIONAL",
          Refused(400, "unfilled_macro")),
        c(BEMOB_STATUSES, "bemob", "/postback/bemob?api_key={K}&cid={T}&status=Rebill",
          Event(json!({"status": "other", "status_raw": "Rebill"}))),
        // PeerClick: cid required; payout, status, txid, currency optional.
        c(PEERCLICK, "peerclick", "/postback/peerclick?api_key={K}&cid={T}",
          Event(json!({"amount": null, "status": "approved", "currency": null}))),
        c(PEERCLICK, "peerclick", "/postback/peerclick?api_key={K}&cid={T}&payout=3.10&txid=X1&currency=eur&status=hold",
          Event(json!({"amount": "3.10", "txid": "X1", "currency": "EUR", "status": "other", "status_raw": "hold"}))),
        c(PEERCLICK, "peerclick", "/postback/peerclick?api_key={K}&cid={T}&status=declined",
          Event(json!({"status": "declined"}))),
        // Trackier: click_id, txn_id, sale_amount, goal_value; statuses
        // approved, pending, rejected (and cancelled on an older copy).
        c(TRACKIER, "trackier", "/postback/trackier?api_key={K}&click_id={T}&txn_id=ORD-1&sale_amount=49.90&goal_value=purchase&revenue=5&currency=USD&status=approved&sub1=a",
          Event(json!({"amount": "49.90", "txid": "ORD-1", "goal": "purchase", "currency": "USD", "status": "approved",
                       "params": {"revenue": "5", "sub1": "a"}}))),
        c(TRACKIER, "trackier", "/postback/trackier?api_key={K}&click_id={T}&status=pending",
          Event(json!({"amount": null, "status": "pending"}))),
        c(TRACKIER, "trackier", "/postback/trackier?api_key={K}&click_id={T}&status=rejected",
          Event(json!({"status": "declined", "status_raw": "rejected"}))),
        c(TRACKIER_OLD, "trackier", "/postback/trackier?api_key={K}&click_id={T}&status=Cancelled",
          Event(json!({"status": "declined", "status_raw": "Cancelled"}))),
        c(TRACKIER, "trackier", "/postback/trackier?api_key={K}&click_id={T}&status=hold", Refused(400, "bad_status")),
        // Adjust's callback with {label}, {revenue_float}, {currency} (lowercase)
        // and {event_name} filled in; its {revenue} is cents and never an amount.
        c(ADJUST_REVENUE, "reference", "/postback/reference?api_key={K}&tracking={T}&amount=3.99&goal=purchase_100_coins&currency=usd",
          Event(json!({"amount": "3.99", "currency": "USD", "goal": "purchase_100_coins"}))),
        c(ADJUST_REVENUE, "reference", "/postback/reference?api_key={K}&tracking={T}&amount=345&currency=usd", Refused(400, "bad_amount")),
        // Nested JSON bodies: Branch's webhook nests link data and event data
        // (its timestamps in milliseconds); AppsFlyer's Push API sends a flat
        // body with booleans and nulls, its times "yyyy-mm-dd hh:mm:ss.sss" in UTC.
        json(BRANCH_WEBHOOKS, "branch_webhook", "/postback/branch_webhook?api_key={K}",
          r#"{"name":"PURCHASE","id":"1234","timestamp":1631842200000,"attributed":true,
              "last_attributed_touch_timestamp":1631842151653,
              "last_attributed_touch_data":{"~campaign":"spring","~channel":"network-x","click_id":"{T}","+via_features":["QR"]},
              "event_data":{"revenue":12.5,"currency":"USD","transaction_id":"TX-{T}"},
              "user_data":{"os":"IOS","limit_ad_tracking":false,"developer_identity":null},
              "content_items":[{"$sku":"sku-1","$price":12.5}]}"#,
          Event(json!({"amount": "12.50", "currency": "USD", "txid": "TX-{T}", "goal": "PURCHASE",
                       "click_time": "2021-09-17T01:29:11.653Z", "status": "approved"}))),
        json(BRANCH_WEBHOOKS, "branch_webhook", "/postback/branch_webhook?api_key={K}",
          r#"{"name":"PURCHASE","last_attributed_touch_data":{"~campaign":"spring"},"event_data":{"revenue":1}}"#,
          Refused(400, "missing_tracking")),
        json(BRANCH_WEBHOOKS, "branch_webhook", "/postback/branch_webhook?api_key={K}",
          r#"{"a":{"b":{"c":{"d":{"click_id":"{T}"}}}}}"#, Refused(400, "bad_body")),
        json(APPSFLYER_PUSH, "appsflyer_push", "/postback/appsflyer_push?api_key={K}",
          r#"{"af_sub1":"{T}","event_name":"af_purchase","event_revenue":"9.99","event_revenue_currency":"EUR",
              "attributed_touch_time":"2021-09-17 01:29:11.653","is_retargeting":false,"wifi":true,"af_sub2":null,"campaign":""}"#,
          Event(json!({"amount": "9.99", "currency": "EUR", "goal": "af_purchase",
                       "click_time": "2021-09-17T01:29:11.653Z"}))),
        // A message as the Push API's examples show it: dozens of fields, only
        // the listed ones pass through (no device ids, no IP).
        json(APPSFLYER_PUSH, "appsflyer_push", "/postback/appsflyer_push?api_key={K}",
          r#"{"attributed_touch_type":"click","attributed_touch_time":"2021-09-17 01:29:11.653","install_time":"2021-09-17 01:35:02.112",
              "event_time":"2021-09-18 10:00:00.000","event_name":"af_purchase","event_value":"{\"af_revenue\":\"4.5\"}",
              "event_revenue":"4.5","event_revenue_currency":"USD","event_revenue_usd":"4.5","event_source":"SDK",
              "is_receipt_validated":null,"af_prt":null,"media_source":"example_ad_net_int","af_channel":null,"af_keywords":null,
              "campaign":"christmas_sale","af_c_id":"1234","af_adset":null,"af_adset_id":"54822","af_ad":null,"af_ad_id":null,
              "af_siteid":"A1b1","af_sub_siteid":null,"af_sub1":"{T}","af_sub2":"p2","af_sub3":null,"af_sub4":null,"af_sub5":null,
              "contributor_1_media_source":null,"region":"EU","country_code":"DE","state":"BE","city":"Berlin","ip":"192.0.2.1",
              "wifi":true,"operator":null,"carrier":null,"language":"de-DE","appsflyer_id":"1631842151653-1234567",
              "advertising_id":null,"idfa":"00000000-0000-0000-0000-000000000000","android_id":null,"customer_user_id":"user-7",
              "imei":null,"idfv":null,"platform":"ios","device_type":"iPhone12,1","os_version":"14.7","app_version":"2.1",
              "sdk_version":"v6.3.2","app_id":"id123456789","app_name":"Great App","bundle_id":"com.greatapp",
              "is_retargeting":false,"retargeting_conversion_type":null,"conversion_type":"install","campaign_type":"ua",
              "is_primary_attribution":true,"user_agent":"GreatApp/2.1","http_referrer":null,"original_url":null}"#,
          Event(json!({"amount": "4.50", "currency": "USD", "goal": "af_purchase", "click_time": "2021-09-17T01:29:11.653Z",
                       "params": {"media_source": "example_ad_net_int", "campaign": "christmas_sale", "af_c_id": "1234",
                                  "af_siteid": "A1b1", "af_sub2": "p2", "appsflyer_id": "1631842151653-1234567",
                                  "conversion_type": "install", "campaign_type": "ua", "event_time": "2021-09-18 10:00:00.000"}}))),
        // The same booleans to a flat-JSON source are still bad_body.
        json(REFERENCE, "reference", "/postback/reference?api_key={K}",
          r#"{"tracking":"{T}","amount":"1.00","wifi":true}"#, Refused(400, "bad_body")),
        // Post Affiliate Pro: mixed-case names, `+` a space, A/P/D exactly.
        c(PAP_PIXEL, "pap", "/postback/pap?api_key={K}&visitorId={T}&TotalCost=120.50&OrderID=ORD_12345XYZ&ProductID=test+product&AffiliateID=aff1",
          Event(json!({"amount": "120.50", "txid": "ORD_12345XYZ", "status": "approved",
                       "params": {"ProductID": "test product", "AffiliateID": "aff1"}}))),
        c(PAP_SALE, "pap", "/postback/pap?api_key={K}&visitorId={T}&TotalCost=10.00&PStatus=D&Currency=Eur&CampaignID=55a22310",
          Event(json!({"status": "declined", "status_raw": "D", "currency": "EUR", "campaign_id": "55a22310"}))),
        c(PAP_SALE, "pap", "/postback/pap?api_key={K}&visitorId={T}&PStatus=P", Event(json!({"amount": null, "status": "pending"}))),
        c(PAP_SALE, "pap", "/postback/pap?api_key={K}&visitorId={T}&PStatus=a", Refused(400, "bad_status")),
        c(PAP_PIXEL, "pap", "/postback/pap?api_key={K}&TotalCost=120.50&AffiliateID=aff1", Refused(400, "missing_tracking")),
        // impact.com: the receiver's keys (impact's own example) with impact's
        // placeholders filled; the action id is the token; PENDING, APPROVED,
        // REVERSED; a GET or a JSON POST.
        c(IMPACT_GET, "impact", "/postback/impact?api_key={K}&campaign_id=10306&action_id={T}&status=APPROVED&payout=5.00",
          Event(json!({"amount": "5.00", "status": "approved", "status_raw": "APPROVED", "campaign_id": "10306",
                       "txid": null, "params": {}}))),
        c(IMPACT_CLEARING, "impact", "/postback/impact?api_key={K}&campaign_id=1000&action_tracker_id=2240&action_id={T}&status=PENDING&payout=27.75&amount=1000.00&currency=USD&event_date=2024-01-31T23%3A59%3A59-08%3A00",
          Event(json!({"amount": "27.75", "status": "pending", "goal": "2240", "currency": "USD",
                       "params": {"amount": "1000.00", "event_date": "2024-01-31T23:59:59-08:00"}}))),
        c(IMPACT_STATES, "impact", "/postback/impact?api_key={K}&action_id={T}&status=REVERSED&payout=0.00",
          Event(json!({"amount": "0.00", "status": "declined", "status_raw": "REVERSED"}))),
        json(IMPACT_CLEARING, "impact", "/postback/impact?api_key={K}",
          r#"{"campaign_id":"1000","action_tracker_id":"2240","action_id":"{T}","status":"APPROVED","payout":"12.50","currency":"EUR"}"#,
          Event(json!({"amount": "12.50", "status": "approved", "currency": "EUR", "campaign_id": "1000"}))),
        // A placeholder left unfilled, and impact's click id where the action
        // id belongs (no action id): never filed.
        c(IMPACT_CLEARING, "impact", "/postback/impact?api_key={K}&action_id=%7BActionId%7D&status=PENDING&payout=1.00", Refused(400, "unfilled_macro")),
        c(IMPACT_CLEARING, "impact", "/postback/impact?api_key={K}&action_id={T}&status=%7BStatus%7D&payout=1.00", Refused(400, "unfilled_status")),
        c(IMPACT_GET, "impact", "/postback/impact?api_key={K}&campaign_id=10306&status=APPROVED&payout=5.00", Refused(400, "missing_tracking")),
        // Binom's own status says approved while another says reject.
        c(BINOM, "binom", "/postback/binom?api_key={K}&cnv_id={T}&cnv_status=approve&status=reject", Refused(400, "conflicting_status")),
    ]
}

/// The gateway binary with [`CONFIG`], against a Tansu broker of its own.
/// Bound as `Rig { tansu, _dir, gw }`, the gateway stops before its broker.
struct Rig {
    gw: GatewayProcess,
    _dir: tempfile::TempDir,
    tansu: Tansu,
}

impl Rig {
    async fn start() -> Rig {
        let tansu = Tansu::start();
        let (_dir, config) = common::process::config_file(CONFIG);
        let gw = GatewayProcess::start(Some(&tansu.brokers), &[("POSTBACK_CONFIG", &config)]).await;
        Rig { gw, _dir, tansu }
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_platform_postback_as_documented_becomes_the_right_event() {
    let Rig { tansu, _dir, gw } = Rig::start().await;
    let client = reqwest::Client::new();
    let mut accepted: HashMap<String, (String, &Case)> = HashMap::new();
    let cases = cases();
    for (i, case) in cases.iter().enumerate() {
        // Affise's click ids are exactly 24 characters.
        let token = format!("{}-{i:03}-{}", case.source, "x".repeat(20))[..24].to_owned();
        let token = if case.source == "affise" {
            token
        } else {
            format!("{}-case-{i}", case.source)
        };
        let fill = |s: &str| s.replace("{T}", &token).replace("{K}", KEY);
        let url = gw.url(&fill(case.url));
        let req = match case.form {
            Some(body) => client
                .post(url)
                .header("content-type", case.content_type)
                .body(fill(body)),
            None => client.get(url),
        };
        let (status, body) = reply(req.send().await.unwrap()).await;
        let what = format!("{} ({}): {}", case.source, case.doc, case.url);
        match &case.want {
            Want::Event(_) => {
                assert_eq!(status, 200, "{what}: {body}");
                accepted.insert(token, (ok_id(&body), case));
            }
            Want::Ignored => {
                assert_eq!((status, body.as_str()), (200, "IGNORED"), "{what}");
            }
            Want::Refused(code, reason) => {
                assert_eq!(
                    (status, body.as_str()),
                    (*code, &*format!("ERROR {reason}")),
                    "{what}"
                );
            }
        }
    }

    head_and_options(&client, &gw).await;

    let records = read_topic(
        &tansu.brokers,
        TOPIC,
        accepted.len(),
        Duration::from_secs(2),
    );
    assert_eq!(
        records.len(),
        accepted.len(),
        "one event per accepted postback, nothing else"
    );
    for r in &records {
        let token = r.value["token"].as_str().unwrap();
        let (id, case) = accepted
            .get(token)
            .unwrap_or_else(|| panic!("an event nobody sent: {}", r.value));
        let what = format!("{} ({}): {}", case.source, case.doc, case.url);
        assert_eq!(r.value["event_id"], id.as_str(), "{what}");
        assert_eq!(r.value["source"], case.source, "{what}");
        assert_eq!(r.value["kind"], "s2s", "{what}");
        assert_eq!(r.key, token, "{what}");
        let Want::Event(fields) = &case.want else {
            unreachable!()
        };
        for (field, want) in fields.as_object().unwrap() {
            if field == "params" {
                // Exactly these: nothing else rides along.
                assert_eq!(&r.value["params"], want, "{what}: params in {}", r.value);
            } else if field == "txid" && want.is_string() {
                let want = want.as_str().unwrap().replace("{T}", token);
                assert_eq!(r.value[field], want.as_str(), "{what}: txid in {}", r.value);
            } else {
                assert_eq!(&r.value[field], want, "{what}: {field} in {}", r.value);
            }
        }
        // An amount is one canonical shape: digits, a dot, at least two decimals.
        if let Some(a) = r.value["amount"].as_str() {
            let (int, frac) = a.trim_start_matches('-').split_once('.').unwrap();
            assert!(!int.is_empty() && frac.len() >= 2, "{what}: amount {a}");
        }
    }
}

/// Link checkers send `HEAD`, browsers a preflight `OPTIONS`: a 405 names the
/// methods an endpoint takes (RFC 9110 §15.5.6), a pixel endpoint answers a
/// preflight, and neither files anything (the topic holds only the cases').
async fn head_and_options(client: &reqwest::Client, gw: &GatewayProcess) {
    use reqwest::Method;
    let good = format!("?api_key={KEY}&tracking=head-or-options&amount=1.00");
    let key_path = format!("/{KEY}/postback");
    for (method, path, status, allow) in [
        (Method::HEAD, "/postback", 405, "GET, POST"),
        (Method::HEAD, "/postback/reference", 405, "GET, POST"),
        (Method::HEAD, "/pixel/reference", 405, "GET, POST"),
        (Method::HEAD, "/pixel.gif", 405, "GET"),
        (Method::HEAD, key_path.as_str(), 405, "GET, POST"),
        (Method::OPTIONS, "/postback/reference", 405, "GET, POST"),
        (Method::OPTIONS, "/pixel.gif", 405, "GET"),
        (Method::PUT, "/postback/reference", 405, "GET, POST"),
        (Method::OPTIONS, "/pixel", 204, "GET, POST"),
        (Method::OPTIONS, "/pixel/reference", 204, "GET, POST"),
    ] {
        let r = client
            .request(method.clone(), gw.url(&format!("{path}{good}")))
            .header("origin", "https://shop.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        let what = format!("{method} {path}");
        assert_eq!(r.status().as_u16(), status, "{what}");
        assert_eq!(r.headers()["allow"], allow, "{what}");
        if status == 204 {
            let h = r.headers();
            assert_eq!(h["access-control-allow-origin"], "*", "{what}");
            assert_eq!(h["access-control-allow-methods"], "GET, POST", "{what}");
            assert_eq!(h["access-control-allow-headers"], "Content-Type", "{what}");
            assert!(r.bytes().await.unwrap().is_empty(), "{what}");
        }
    }
}

/// Repeats that are not duplicates: RedTrack's duplicate postback modes are
/// per offer, one of them "Keep original data, Increment payout: only
/// conversion payout will be edited (for example, tracking subsequent sales
/// for the same conversion)"
/// (https://help.redtrack.io/knowledgebase/kb/basic-setup-9785/offer-sources-brand-related-settings-9830/duplicate-postback-settings/).
/// A source whose `dedup_fields` include the amount files each new amount on
/// the same click; the default key (txid, goal, status) keeps answering
/// DUPLICATE, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_decides_which_fields_make_a_conversion_distinct() {
    let Rig { tansu, _dir, gw } = Rig::start().await;
    let client = reqwest::Client::new();
    let send = |source: &str, sum: &str| {
        let url = gw.url(&format!(
            "/postback/{source}?api_key={KEY}&clickid=click-{source}&sum={sum}"
        ));
        let client = client.clone();
        async move { reply(client.get(url).send().await.unwrap()).await }
    };
    let mut first_ids = HashMap::new();
    for (source, sum, want) in [
        ("redtrack_increment", "10", "OK"),
        ("redtrack_increment", "15", "OK"),
        // The same amount again is the sender's retry; 15 and 15.00 are one amount.
        ("redtrack_increment", "15.00", "DUPLICATE"),
        ("redtrack_increment", "10", "DUPLICATE"),
        ("redtrack", "10", "OK"),
        ("redtrack", "15", "DUPLICATE"),
    ] {
        let (status, body) = send(source, sum).await;
        assert_eq!(status, 200, "{source} sum={sum}: {body}");
        assert!(body.starts_with(want), "{source} sum={sum}: {body}");
        if want == "OK" {
            first_ids.insert(format!("{source}/{sum}"), ok_id(&body));
        }
    }
    let records = read_topic(&tansu.brokers, TOPIC, 3, Duration::from_secs(2));
    let mut got: Vec<(String, String, String)> = records
        .iter()
        .map(|r| {
            (
                r.value["source"].as_str().unwrap().to_owned(),
                r.value["amount"].as_str().unwrap().to_owned(),
                r.value["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String, String)> = [
        ("redtrack", "10.00", "redtrack/10"),
        ("redtrack_increment", "10.00", "redtrack_increment/10"),
        ("redtrack_increment", "15.00", "redtrack_increment/15"),
    ]
    .iter()
    .map(|(s, a, k)| (s.to_string(), a.to_string(), first_ids[*k].clone()))
    .collect();
    want.sort();
    assert_eq!(got, want, "one event per new sale, nothing else");
}

/// impact.com notifies each state of an action under its action id
/// (https://integrations.impact.com/impact-brand/reference/the-action-update-object:
/// "PENDING ... Actions that have been modified will also have this state",
/// then APPROVED or REVERSED), and Action Lifecycle Events fire "when an
/// action is tracked, modified, or reversed"
/// (https://impact-helpdesk.freshdesk.com/en/support/solutions/articles/48001237753-enable-event-notification-postbacks-for-brands).
/// Each new state, and a modified payout, is an event keyed by the action;
/// a notification sent again is DUPLICATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impact_action_is_one_token_through_its_lifecycle() {
    let Rig { tansu, _dir, gw } = Rig::start().await;
    let client = reqwest::Client::new();
    let action = "1000.4636.158133";
    let mut ids = Vec::new();
    for (status, payout, want) in [
        ("PENDING", "5.00", "OK"),
        ("PENDING", "5.00", "DUPLICATE"),
        ("PENDING", "4.00", "OK"),
        ("APPROVED", "4.00", "OK"),
        ("APPROVED", "4.00", "DUPLICATE"),
        ("REVERSED", "4.00", "OK"),
    ] {
        let url = gw.url(&format!(
            "/postback/impact?api_key={KEY}&campaign_id=1000&action_id={action}&status={status}&payout={payout}"
        ));
        let (code, body) = reply(client.get(url).send().await.unwrap()).await;
        assert_eq!(code, 200, "{status} {payout}: {body}");
        assert!(body.starts_with(want), "{status} {payout}: {body}");
        if want == "OK" {
            ids.push((ok_id(&body), status, payout));
        }
    }
    let records = read_topic(&tansu.brokers, TOPIC, ids.len(), Duration::from_secs(2));
    assert_eq!(
        records.len(),
        ids.len(),
        "one event per new state, nothing else"
    );
    for (r, (id, status, payout)) in records.iter().zip(&ids) {
        assert_eq!(r.key, action, "keyed by the action: {}", r.value);
        assert_eq!(r.value["token"], action);
        assert_eq!(r.value["event_id"], id.as_str(), "in order: {}", r.value);
        assert_eq!(r.value["status_raw"], *status, "{}", r.value);
        assert_eq!(r.value["amount"], *payout, "{}", r.value);
    }
}
