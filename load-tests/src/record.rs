//! What the workers saw: latency histograms (whole run and per second),
//! outcomes, errors by kind, and the postbacks answered `OK`, which the
//! delivery check then looks for in Kafka.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{Failure, Reply};
use crate::mix::{Expect, Generator, Method, Planned};

/// Latencies are kept in microseconds up to a minute.
const MAX_MICROS: u64 = 60_000_000;

/// The event a postback answered `OK` must have produced.
#[derive(Debug, Clone)]
pub struct ExpectedEvent {
    pub event_id: String,
    pub amount: String,
    pub kind: &'static str,
}

struct Second {
    replies: u64,
    errors: u64,
    latency: Histogram<u64>,
}

pub struct Recorder {
    /// Whether replies are checked against what each postback must get (off
    /// for the baseline, which answers everything alike).
    check: bool,
    /// From the time a request was due (open loop) or sent (closed loop).
    pub latency: Histogram<u64>,
    /// From the time a request was actually written.
    pub service: Histogram<u64>,
    seconds: Vec<Second>,
    pub sent: u64,
    pub replies: u64,
    pub last_done: Duration,
    pub outcomes: BTreeMap<String, u64>,
    /// Replies by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    /// A few examples of unexpected replies, for the report.
    pub samples: Vec<String>,
    /// Token and the event it must have produced, in reply order; indexed
    /// by token after the run, for the delivery check.
    pub expected: Vec<(String, ExpectedEvent)>,
    /// Tokens of new conversions that got no reply: their events may or may
    /// not be in Kafka, and either is allowed.
    pub unanswered: HashSet<String>,
}

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, sigfig).expect("valid histogram bounds")
}

impl Recorder {
    /// `expected_events`: about how many new conversions the run will send.
    /// The list of expected events is made that large up front and filled in
    /// order: growing a map mid-run rehashes every entry on the generator's
    /// only thread (and a fresh map's first inserts fault in pages all over
    /// it), and in open loop such a pause is charged to the server as latency.
    pub fn new(check: bool, expected_events: usize) -> Recorder {
        Recorder {
            check,
            latency: histogram(3),
            service: histogram(3),
            seconds: Vec::new(),
            sent: 0,
            replies: 0,
            last_done: Duration::ZERO,
            outcomes: BTreeMap::new(),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            samples: Vec::new(),
            expected: Vec::with_capacity(if check { expected_events } else { 0 }),
            unanswered: HashSet::new(),
        }
    }

    /// Records one request; times are offsets from the start of the run.
    pub fn record(
        &mut self,
        due: Duration,
        sent: Duration,
        done: Duration,
        planned: &Planned,
        result: Result<Reply, Failure>,
        generator: &mut Generator,
    ) {
        self.sent += 1;
        self.last_done = self.last_done.max(done);
        let latency = micros(done.saturating_sub(due));
        self.latency.saturating_record(latency);
        self.service
            .saturating_record(micros(done.saturating_sub(sent)));
        let second = done.as_secs() as usize;
        while self.seconds.len() <= second {
            self.seconds.push(Second {
                replies: 0,
                errors: 0,
                latency: histogram(2),
            });
        }
        let sec = &mut self.seconds[second];
        sec.latency.saturating_record(latency);
        let reply = match result {
            Ok(r) => r,
            Err(f) => {
                sec.errors += 1;
                *self.errors.entry(f.as_str().to_owned()).or_default() += 1;
                if let Expect::Accepted { token, .. } = &planned.expect {
                    self.unanswered.insert(token.clone());
                }
                return;
            }
        };
        self.replies += 1;
        sec.replies += 1;
        *self.statuses.entry(reply.status).or_default() += 1;
        if !self.check {
            if reply.status >= 500 {
                sec.errors += 1;
                *self
                    .errors
                    .entry(format!("http_{}", reply.status))
                    .or_default() += 1;
            }
            return;
        }
        let outcome = self.check(planned, &reply, generator);
        if let Err(kind) = outcome {
            self.seconds[second].errors += 1;
            *self.errors.entry(kind).or_default() += 1;
            if self.samples.len() < 20 {
                self.samples.push(format!(
                    "{:?}: {} {}",
                    planned.expect, reply.status, reply.text
                ));
            }
        }
    }

    /// Compares a reply with what its postback must get; `Err` names the error kind.
    fn check(
        &mut self,
        planned: &Planned,
        reply: &Reply,
        generator: &mut Generator,
    ) -> Result<(), String> {
        let pixel = planned.method == Method::Pixel;
        if pixel && (reply.status != 200 || !reply.gif) {
            return Err("pixel_not_gif".into());
        }
        if reply.status >= 500 {
            // A 5xx promises that nothing reached Kafka: the token stays out of
            // `expected` and `unanswered`, so an event for it is a failure.
            return Err(format!("http_{}", reply.status));
        }
        let text = reply.text.as_str();
        if text == "ERROR unavailable" {
            return Err("unavailable".into());
        }
        match &planned.expect {
            Expect::Accepted { seq, token, amount } => {
                let id = text.strip_prefix("OK ").filter(|id| id.len() == 36);
                match id {
                    Some(id) if reply.status == 200 => {
                        self.bump("ok");
                        generator.accepted(*seq, planned.method, id);
                        self.expected.push((
                            token.clone(),
                            ExpectedEvent {
                                event_id: id.to_owned(),
                                amount: amount.clone(),
                                kind: planned.method.kind(),
                            },
                        ));
                        Ok(())
                    }
                    _ => Err("unexpected_reply".into()),
                }
            }
            Expect::Duplicate { first } => {
                if reply.status == 200 && text.strip_prefix("DUPLICATE ") == Some(first.as_str()) {
                    self.bump("duplicate");
                    Ok(())
                } else {
                    Err("unexpected_reply".into())
                }
            }
            Expect::Refused { reason, status } => {
                if reply.status == *status && text.strip_prefix("ERROR ") == Some(reason) {
                    self.bump(&format!("refused:{reason}"));
                    Ok(())
                } else {
                    Err("unexpected_reply".into())
                }
            }
        }
    }

    fn bump(&mut self, outcome: &str) {
        match self.outcomes.get_mut(outcome) {
            Some(n) => *n += 1,
            None => {
                self.outcomes.insert(outcome.to_owned(), 1);
            }
        }
    }

    /// Per-second rows: replies, errors and latency percentiles (ms).
    pub fn per_second(&self) -> Vec<SecondRow> {
        self.seconds
            .iter()
            .enumerate()
            .map(|(i, s)| SecondRow {
                second: i as u64,
                replies: s.replies,
                errors: s.errors,
                latency_ms: Percentiles::of(&s.latency),
            })
            .collect()
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_MICROS)
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SecondRow {
    pub second: u64,
    pub replies: u64,
    pub errors: u64,
    pub latency_ms: Percentiles,
}
