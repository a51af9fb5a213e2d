//! The sink the request path uses: Kafka first, the spool when Kafka cannot
//! acknowledge in time, and a drainer that moves spooled events to Kafka,
//! oldest first, once it is back.

use crate::sync::LockAnyway;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::kafka::KafkaSink;
use super::spool::{self, Record, Spool, SpoolError};
use super::warmup::{read_window, replay_topic, Seen, Since};
use super::{BoxFuture, Sink, SinkError};
use crate::backoff::{jittered, Backoff};
use crate::config::KafkaConfig;
use crate::event::Event;
use crate::metrics as m;
use crate::os::Clock;
use crate::tasks;

/// Spooled events sent to Kafka at once by the drainer.
const DRAIN_CHUNK: usize = 512;

pub(crate) struct Durable {
    pub kafka: Arc<KafkaSink>,
    pub spool: Arc<Spool>,
    clock: Clock,
    /// Set when an event was spooled after a Kafka attempt that failed late:
    /// the broker may still have written it, so the drainer looks first.
    ambiguous: AtomicBool,
    /// Whether the dedup window holds the topic's keys. After a start during a
    /// Kafka outage it does not, until the drainer has read the topic back;
    /// until then every event goes through the spool, so the drainer can drop
    /// the repeats of events already in the topic before they are sent.
    topic_warm: AtomicBool,
    /// How long an append may wait for its sync.
    append_timeout: Duration,
    /// Events whose spool write was not confirmed in time and whose senders
    /// were answered 503: if the write lands after all, the drainer drops it.
    withdrawn: Mutex<HashSet<u128>>,
    /// Deliveries in progress, also those whose request stopped waiting (a
    /// client that hung up): shutdown waits for them before the spool closes.
    in_flight: TaskTracker,
}

impl Durable {
    pub fn new(
        kafka: Arc<KafkaSink>,
        spool: Arc<Spool>,
        clock: Clock,
        append_timeout: Duration,
    ) -> Arc<Durable> {
        Arc::new(Durable {
            kafka,
            spool,
            clock,
            ambiguous: AtomicBool::new(false),
            topic_warm: AtomicBool::new(true),
            append_timeout,
            withdrawn: Mutex::new(HashSet::new()),
            in_flight: TaskTracker::new(),
        })
    }

    /// Waits until every delivery in progress has finished, or `deadline`;
    /// returns whether they all did. Called once, at shutdown.
    pub(crate) async fn wait_for_deliveries(&self, deadline: tokio::time::Instant) -> bool {
        self.in_flight.close();
        tokio::time::timeout_at(deadline, self.in_flight.wait())
            .await
            .is_ok()
    }

    /// Whether the event was withdrawn (its sender answered 503); forgets it.
    fn take_withdrawn(&self, event_id: u128) -> bool {
        let mut w = self.withdrawn.lock_anyway();
        !w.is_empty() && w.remove(&event_id)
    }

    /// Says that the dedup window lacks the topic's keys (a start during an
    /// outage): events go through the spool until the drainer has read the
    /// topic back.
    pub(crate) fn topic_not_warm(&self) {
        self.topic_warm.store(false, Ordering::Release);
    }

    async fn spool(&self, event: &Event) -> Result<(), SinkError> {
        let record = Record {
            event_id: event.event_id,
            dedup_key: event.dedup_key,
            at: (self.clock)(),
            source: event.source.to_string(),
            key: event.key.clone(),
            payload: event.payload.clone(),
        };
        match tokio::time::timeout(self.append_timeout, self.spool.append(&record)).await {
            Ok(Ok(())) => {
                self.spool.metrics().counter(m::SPOOLED).increment(1);
                Ok(())
            }
            Ok(Err(SpoolError::Full)) => Err(SinkError::SpoolFull),
            Ok(Err(e)) => Err(SinkError::Spool(e.to_string())),
            Err(_) => {
                // The write may still land: the drainer must then drop it, as
                // the sender was told it failed and will send it again.
                self.withdrawn
                    .lock_anyway()
                    .insert(event.event_id.as_u128());
                self.spool.metrics().counter(m::SPOOL_TIMEOUTS).increment(1);
                Err(SinkError::SpoolTimeout)
            }
        }
    }
}

impl Sink for Durable {
    fn deliver<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.in_flight.track_future(async move {
            // While Kafka is known to be unreachable, waiting for its timeout
            // would only slow every sender down: go to disk at once.
            if self.kafka.ready() && self.topic_warm.load(Ordering::Acquire) {
                match self.kafka.send_event(event).await {
                    Ok(()) => return Ok(()),
                    Err(SinkError::Closed) => return Err(SinkError::Closed),
                    // Not written, and sending it again cannot succeed: the
                    // sender hears 503 now, not 200 and a dead letter later.
                    Err(e @ SinkError::Refused(_)) => return Err(e),
                    Err(SinkError::QueueFull) => {}
                    Err(_) => self.ambiguous.store(true, Ordering::Release),
                }
            }
            self.spool(event).await
        }))
    }

    /// Ready while Kafka or the spool takes events, unless the cluster
    /// refuses the gateway's connections: a wrong password or CA does not
    /// heal by itself, and a rollout with one must stop at its first pod.
    /// The spool's disk matters only while Kafka is away: then a disk that
    /// refuses writes (full, read-only, failing) leaves nothing to make an
    /// event durable with.
    fn problem(&self) -> Option<String> {
        let kafka = self.kafka.problem()?;
        let spool = match self.spool.health() {
            Some(why) => Some(format!("the spool cannot be written: {why}")),
            None if !self.spool.has_room() => Some("the spool is full".to_owned()),
            None => None,
        };
        match spool {
            Some(spool) => Some(format!("{kafka}, and {spool}")),
            None => super::logs::refusal().map(|_| kafka),
        }
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, ()> {
        self.kafka.flush(timeout)
    }
}

/// How the drainer reads the topic back before sending spooled events.
pub(crate) struct Lookback {
    pub kafka: KafkaConfig,
    pub brokers: String,
    /// Told of the window's keys, read from the topic when the start could
    /// not read them.
    pub seen: Seen,
    pub window: Duration,
    pub warmup_limit: Duration,
}

/// What the topic already holds, as far as the drainer read it back.
#[derive(Default)]
struct InKafka {
    event_ids: HashSet<u128>,
    /// Dedup key -> the event id the topic has for it.
    keys: HashMap<u128, u128>,
}

impl InKafka {
    /// Whether `r` need not be sent: the topic has it (an attempt written
    /// after all), or has another event of the same conversion (a repeat
    /// accepted while the dedup window lacked the topic's keys).
    fn has(&self, event_id: u128, dedup_key: u128) -> bool {
        self.event_ids.contains(&event_id)
            || self.keys.get(&dedup_key).is_some_and(|id| *id != event_id)
    }

    fn clear(&mut self) {
        self.event_ids.clear();
        self.keys.clear();
    }
}

/// Moves spooled events to Kafka until `stop` is cancelled. A segment is
/// deleted only after every record in it is acknowledged; a chunk whose
/// delivery fails is retried (so a record may reach Kafka twice, never zero times).
///
/// After an outage, a restart, or a late-failing attempt, the topic is read
/// back from just before the oldest spooled event, and events already there
/// (an attempt the broker wrote after all) are not sent again.
pub(crate) async fn drain(
    sink: Arc<Durable>,
    clock: Clock,
    lookback: Arc<Lookback>,
    stop: CancellationToken,
) {
    let spool = sink.spool.clone();
    let mut drainer = Drainer {
        seq: spool.oldest(),
        spool,
        sink,
        clock,
        lookback,
        stop,
        pos: 0,
        need_scan: true,
        in_kafka: InKafka::default(),
    };
    while !drainer.stop.is_cancelled() {
        if drainer.round().await.is_err() {
            return;
        }
    }
}

/// The drainer's state between rounds.
struct Drainer {
    sink: Arc<Durable>,
    spool: Arc<Spool>,
    clock: Clock,
    lookback: Arc<Lookback>,
    stop: CancellationToken,
    /// The segment being drained, and the offset just past its last record sent.
    seq: u64,
    pos: u64,
    /// Whether the topic must be read back before the next records go out.
    need_scan: bool,
    /// What the last read-back found in the topic.
    in_kafka: InKafka,
}

impl Drainer {
    /// One round: reads the topic back after a start without it, waits for
    /// Kafka, or sends the next records of the oldest segment (deleting the
    /// segment once it is drained). `Err` when told to stop.
    async fn round(&mut self) -> Result<(), Stopped> {
        if self.spool.faults().drainer_panics() {
            panic!("a drainer panic injected by a test");
        }
        if !self.sink.topic_warm.load(Ordering::Acquire) {
            return self.warm_from_topic().await;
        }
        if self.spool.backlog() == 0 {
            self.spool.metrics().gauge(m::SPOOL_OLDEST_AGE).set(0.0);
            self.in_kafka.clear();
        }
        if !self.sink.kafka.ready() {
            self.need_scan = true;
            pause(&self.stop, Duration::from_millis(500)).await;
            return Ok(());
        }
        if self.sink.ambiguous.swap(false, Ordering::AcqRel) {
            self.need_scan = true;
        }
        let Some(batch) = self.read().await? else {
            return Ok(());
        };
        if batch.records.is_empty() {
            self.caught_up(&batch).await;
            return Ok(());
        }
        self.send(batch).await
    }

    /// After a start without the topic's keys (an outage, or a read that
    /// stopped short): reads the whole window back, into the dedup map too,
    /// then lets postbacks go to Kafka directly again. Until a read gets to
    /// the end, postbacks keep going through the spool and nothing is sent.
    async fn warm_from_topic(&mut self) -> Result<(), Stopped> {
        let since = (i64::from((self.clock)()) - self.lookback.window.as_secs() as i64) * 1000;
        read_back(&self.sink, &self.lookback, since, true, &self.stop).await?;
        // What to skip of the spooled events comes from the short read
        // before they are sent.
        self.in_kafka.clear();
        self.need_scan = true;
        self.sink.topic_warm.store(true, Ordering::Release);
        info!("Rebuilt the dedup window from Kafka after starting without it; postbacks go to Kafka directly again.");
        Ok(())
    }

    /// The synced records of the current segment from `pos` on; `None` when
    /// there is nothing to send this round (the segment is gone, or the read failed).
    async fn read(&mut self) -> Result<Option<spool::Batch>, Stopped> {
        let (sp, seq, pos) = (self.spool.clone(), self.seq, self.pos);
        match tokio::task::spawn_blocking(move || sp.read_from(seq, pos)).await {
            Ok(Ok(Some(batch))) => Ok(Some(batch)),
            Ok(Ok(None)) => {
                // The segment is gone (removed after draining): go on with the oldest.
                self.next_segment();
                Ok(None)
            }
            Ok(Err(e)) => {
                warn!(error = %e, "Cannot read the spool; retrying.");
                pause(&self.stop, jittered(Duration::from_secs(1))).await;
                Ok(None)
            }
            // A panic in the read is the drainer's own: its owner reports it.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Stopped),
        }
    }

    fn next_segment(&mut self) {
        self.seq = self.spool.oldest();
        self.pos = 0;
    }

    /// Nothing new in the segment: deletes it once it is sealed and drained,
    /// seals it when the drainer has caught up with the writer, and waits
    /// for the next append.
    async fn caught_up(&mut self, batch: &spool::Batch) {
        if batch.sealed && self.pos >= batch.synced {
            // An unlink waits for the disk: off the runtime's workers.
            let (spool, seq) = (self.spool.clone(), self.seq);
            let removed = tokio::task::spawn_blocking(move || spool.remove(seq))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            match removed {
                Ok(()) => self.next_segment(),
                Err(e) => {
                    warn!(error = %e, "Cannot delete a drained spool segment.");
                    pause(&self.stop, jittered(Duration::from_secs(1))).await;
                }
            }
            return;
        }
        if !batch.sealed && self.pos > 0 {
            // Caught up with the segment being written: seal it so it can go.
            self.spool.rotate();
        }
        tokio::select! {
            _ = self.spool.appended.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = self.stop.cancelled() => {}
        }
    }

    /// Sends `batch` in chunks, after reading the topic back when needed;
    /// skips what the topic already has and what was withdrawn.
    async fn send(&mut self, batch: spool::Batch) -> Result<(), Stopped> {
        if let Some((_, first)) = batch.records.first() {
            let age = (self.clock)().saturating_sub(first.at);
            self.spool
                .metrics()
                .gauge(m::SPOOL_OLDEST_AGE)
                .set(f64::from(age));
            if self.need_scan {
                // Nothing of the batch goes out until a read-back got to the
                // end: a read that stopped short may have missed the very
                // attempts the broker wrote after all.
                let since = (i64::from(first.at) - 60) * 1000;
                self.in_kafka =
                    read_back(&self.sink, &self.lookback, since, false, &self.stop).await?;
                self.need_scan = false;
            }
        }
        for chunk in batch.records.chunks(DRAIN_CHUNK) {
            let mut skip = Vec::new();
            let mut send = Vec::new();
            for (_, r) in chunk {
                let id = r.event_id.as_u128();
                if self.sink.take_withdrawn(id) || self.in_kafka.has(id, r.dedup_key) {
                    skip.push(r);
                } else {
                    // Two spooled events of one conversion: an append that
                    // timed out (its sender got 503) and landed after all,
                    // and the sender's retry. The first one sent counts for
                    // both, also after a restart has forgotten the timeout.
                    self.in_kafka.keys.insert(r.dedup_key, id);
                    send.push(r);
                }
            }
            if !skip.is_empty() {
                self.spool
                    .metrics()
                    .counter(m::SPOOL_SKIPPED)
                    .increment(skip.len() as u64);
            }
            // Stopped part-way: the chunk stays in the spool, and the next
            // start reads the topic back before sending it again.
            deliver_all(&self.sink, &self.lookback, send, &self.stop).await?;
            self.pos = chunk.last().map_or(self.pos, |(end, _)| *end);
            self.spool.acknowledged(chunk.len() as u64);
            self.spool
                .metrics()
                .counter(m::SPOOL_DRAINED)
                .increment(chunk.len() as u64);
        }
        if self.spool.backlog() == 0 {
            info!("The spool is drained.");
        }
        Ok(())
    }
}

/// The drainer was told to stop.
struct Stopped;

/// Delivers every record, until Kafka has taken them all or `stop` is
/// cancelled. A failed round is retried with a growing pause (up to 5 s), and
/// only after reading the topic back: an attempt that failed late may have
/// been written after all, and must not be written twice. A delivery that
/// panics counts as failed (and is logged and counted as a task's panic). A record Kafka refuses for good (too large for
/// the topic, not authorized, invalid) goes to the dead-letter file instead
/// of holding up everything behind it.
async fn deliver_all(
    sink: &Arc<Durable>,
    lookback: &Arc<Lookback>,
    records: Vec<&Record>,
    stop: &CancellationToken,
) -> Result<(), Stopped> {
    let Some(oldest_at) = records.iter().map(|r| r.at).min() else {
        return Ok(());
    };
    let mut todo: Vec<(Arc<Event>, &Record)> = records
        .into_iter()
        .map(|r| {
            let ev = Event {
                event_id: r.event_id,
                dedup_key: r.dedup_key,
                key: r.key.clone(),
                source: Arc::from(r.source.as_str()),
                payload: r.payload.clone(),
            };
            (Arc::new(ev), r)
        })
        .collect();
    let mut attempt = 0u32;
    while !todo.is_empty() {
        let mut set = JoinSet::new();
        for (i, (ev, _)) in todo.iter().enumerate() {
            let (kafka, ev) = (sink.kafka.clone(), ev.clone());
            let panics = sink.spool.faults().drain_delivery_panics();
            set.spawn(async move {
                if panics {
                    panic!("a delivery panic injected by a test");
                }
                (i, kafka.send_event(&ev).await)
            });
        }
        // Per record: delivered (or dead-lettered), or still to do.
        let mut done = vec![false; todo.len()];
        let mut refused = Vec::new();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Err(Stopped),
                joined = set.join_next() => match joined {
                    Some(Ok((i, Ok(())))) => done[i] = true,
                    Some(Ok((i, Err(SinkError::Refused(why))))) => refused.push((i, why)),
                    Some(Ok((_, Err(_)))) => {}
                    Some(Err(e)) if e.is_panic() => {
                        tasks::report_panic(sink.spool.metrics(), tasks::DRAIN_DELIVERY, e.into_panic().as_ref());
                    }
                    Some(Err(e)) => warn!(error = %e, "A spooled event's delivery failed unexpectedly; it is retried."),
                    None => break,
                },
            }
        }
        for (i, why) in refused {
            let (spool, record) = (sink.spool.clone(), todo[i].1.clone());
            let id = record.event_id;
            match tokio::task::spawn_blocking(move || spool.dead_letter(&record)).await {
                Ok(Ok(())) => {
                    done[i] = true;
                    sink.spool
                        .metrics()
                        .counter(m::SPOOL_DEAD_LETTERS)
                        .increment(1);
                    tracing::error!(
                        event_id = %id,
                        reason = %why.escape_debug(),
                        file = spool::DEAD_LETTER_FILE,
                        "Kafka refused a spooled event for good; it was moved to the spool's \
                         dead-letter file, and the events behind it drain."
                    );
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "Cannot write the dead-letter file; the event is retried.")
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        let mut i = 0;
        todo.retain(|_| {
            i += 1;
            !done[i - 1]
        });
        if todo.is_empty() {
            break;
        }
        attempt += 1;
        tracing::debug!(
            failed = todo.len(),
            attempt,
            "Spooled events were not delivered; retrying."
        );
        // Jittered: after an outage, every instance's drainer retries at once otherwise.
        let wait = jittered(Duration::from_millis(250 * u64::from(attempt.min(20))));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return Err(Stopped),
        }
        let since = (i64::from(oldest_at) - 60) * 1000;
        let in_kafka = read_back(sink, lookback, since, false, stop).await?;
        let before = todo.len();
        todo.retain(|(ev, _)| !in_kafka.has(ev.event_id.as_u128(), ev.dedup_key));
        if todo.len() < before {
            sink.spool
                .metrics()
                .counter(m::SPOOL_SKIPPED)
                .increment((before - todo.len()) as u64);
        }
    }
    Ok(())
}

/// Waits until Kafka has been reachable for twice the delivery wait without
/// a break. A broker that was frozen or cut off may still write what an
/// earlier attempt (of this process or of one before it) sent it, as it
/// works through its backlog; reading the topic back before then would miss
/// those and send them a second time.
async fn settled(
    sink: &Durable,
    lookback: &Lookback,
    stop: &CancellationToken,
) -> Result<(), Stopped> {
    let settle = lookback.kafka.delivery_wait * 2;
    let mut since: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        if !sink.kafka.ready() {
            since = None;
        } else if now.duration_since(*since.get_or_insert(now)) >= settle {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => return Err(Stopped),
        }
    }
}

/// What one read of the topic found.
enum Lookup {
    /// Every partition was read to its end: the sets hold all the topic has
    /// from the read's start on.
    Complete(InKafka),
    /// The read stopped short, for the reason given: the topic may hold
    /// events it did not see, so it says nothing of what may be sent.
    /// `out_of_time` when it ran out of its time limit.
    Incomplete { why: String, out_of_time: bool },
}

/// Reads the topic back from `since_ms` on (`warm`: the whole window, into
/// the dedup map too) until a read gets to the end, and returns what it
/// found. Each try waits until Kafka has settled. A read that stops short is
/// never used: the caller's records stay where they are (in the spool) and
/// the read is tried again after a pause growing from 1 s to a minute, with
/// a WARN line (one a minute) that says why; one that ran out of time gets
/// twice the time on the next try, up to eight times its limit.
async fn read_back(
    sink: &Durable,
    lookback: &Arc<Lookback>,
    since_ms: i64,
    warm: bool,
    stop: &CancellationToken,
) -> Result<InKafka, Stopped> {
    let base = if warm {
        lookback.warmup_limit
    } else {
        Duration::from_secs(120)
    };
    let mut limit = base;
    let mut failed = 0u32;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        settled(sink, lookback, stop).await?;
        let looked = tokio::select! {
            looked = already_in_kafka(lookback, since_ms, warm, limit) => looked,
            _ = stop.cancelled() => return Err(Stopped),
        };
        let (why, out_of_time) = match looked {
            Lookup::Complete(read) => return Ok(read),
            Lookup::Incomplete { why, out_of_time } => (why, out_of_time),
        };
        failed += 1;
        let wait = backoff.next_pause();
        let (kind, what) = if warm {
            (
                "readback/warm",
                "Reading the dedup window back from Kafka did not get to the end; postbacks \
                 keep going through the spool",
            )
        } else {
            (
                "readback/drain",
                "Reading the topic back before sending spooled events did not get to the end; \
                 they stay in the spool",
            )
        };
        super::logs::LOG.say(kind, tracing::Level::WARN, || {
            format!(
                "{what}, and the read is tried again in {:.1} s (attempt {failed}): {why}",
                wait.as_secs_f64()
            )
        });
        // A read that is only slow (a large window, a slow broker) would
        // run out of the same time again and again.
        if out_of_time {
            limit = (limit * 2).min(base * 8);
        }
        pause(stop, wait).await;
        if stop.is_cancelled() {
            return Err(Stopped);
        }
    }
}

/// Event ids and dedup keys in the topic from `since_ms` on, read within
/// `limit`; `warm` reads the dedup window instead, telling its keys to
/// `lookback.seen` (the keys of an incomplete read too: they are in the
/// topic all the same).
async fn already_in_kafka(
    lookback: &Arc<Lookback>,
    since_ms: i64,
    warm: bool,
    limit: Duration,
) -> Lookup {
    // Bounds the sets' memory (some hundreds of MB at the bound): a span with
    // more events than this is never read to the end, and its spooled events
    // stay in the spool, which the ERROR line below says.
    const MAX_IDS: usize = 5_000_000;
    let started = std::time::Instant::now();
    // The whole window goes to the dedup window, which bounds itself; the
    // drainer's skip sets come from its own short read.
    let found = if warm {
        read_window(
            &lookback.kafka,
            &lookback.brokers,
            since_ms,
            limit,
            &lookback.seen,
        )
        .await
        .map(|r| (r, InKafka::default()))
    } else {
        let lb = lookback.clone();
        // The drainer's short span does not turn into a read of the whole
        // retained topic on a passing failure of the time index: it is
        // tried again.
        let since = Since {
            ms: since_ms,
            or_earliest: false,
        };
        tokio::task::spawn_blocking(move || {
            let mut read = InKafka::default();
            let r = replay_topic(&lb.kafka, &lb.brokers, since, limit, |key, id, _, _, _| {
                read.event_ids.insert(id.as_u128());
                read.keys.insert(key, id.as_u128());
                read.event_ids.len() < MAX_IDS
            });
            (r, read)
        })
        .await
    };
    let (r, read) = match found {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => {
            return Lookup::Incomplete {
                why: format!("the read was cancelled: {e}"),
                out_of_time: false,
            }
        }
    };
    match r.incomplete {
        None => {
            info!(
                read = r.read,
                seconds = started.elapsed().as_secs_f64(),
                "Read the topic back before draining the spool."
            );
            Lookup::Complete(read)
        }
        // Only the drainer's short read has a cap (`warm` fills the dedup
        // window, which bounds itself).
        Some(super::warmup::Incomplete::Stopped) => {
            super::logs::LOG.say("readback/cap", tracing::Level::ERROR, || {
                format!(
                    "The topic holds more than {MAX_IDS} events from a minute before the oldest \
                     spooled event on, the most one read back of it holds: the spooled events \
                     cannot be checked against it and stay in the spool."
                )
            });
            Lookup::Incomplete {
                why: format!("stopped at {MAX_IDS} events, the most one read holds"),
                out_of_time: false,
            }
        }
        Some(why) => Lookup::Incomplete {
            out_of_time: matches!(why, super::warmup::Incomplete::Deadline { .. }),
            why: format!("{} events read, then {why}", r.read),
        },
    }
}

/// Sleeps for `d`, or until `stop` is cancelled.
async fn pause(stop: &CancellationToken, d: Duration) {
    let _ = stop.run_until_cancelled(tokio::time::sleep(d)).await;
}
