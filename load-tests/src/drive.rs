//! The workers: closed loop (each sends again as soon as its reply came) or
//! open loop (requests due at a fixed rate, latency counted from the due
//! time, so a stall of the server is charged to every request it delayed).
//! All workers share one thread, so the record needs no locks.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::client::{self, Failure, Reply};
use crate::mix::Generator;
use crate::record::Recorder;
use crate::scenario::{Pacing, Scenario};

/// What every worker shares.
pub struct Shared {
    pub addr: SocketAddr,
    pub scenario: Scenario,
    pub start: Instant,
    pub end: Instant,
    /// Closed loop: requests left to send. Open loop: the next due slot.
    pub counter: Cell<u64>,
    pub record: RefCell<Recorder>,
}

/// Opens the connections of the keep-alive workers before the clock starts:
/// in a keep-alive run the senders are already connected, and 200 connects
/// in the first milliseconds would be charged to the first requests. A
/// worker whose connect fails here connects when it sends, and its error is
/// recorded then.
pub async fn preconnect(addr: SocketAddr, scenario: &Scenario) -> Vec<Option<TcpStream>> {
    let mut conns = Vec::with_capacity(scenario.concurrency);
    for worker in 0..scenario.concurrency {
        conns.push(if scenario.new_connection_per_request(worker) {
            None
        } else {
            client::connect(addr).await.ok()
        });
    }
    conns
}

/// Runs the scenario's workers to the end of its time or request budget.
pub async fn run(
    shared: Rc<Shared>,
    mut generators: Vec<Generator>,
    conns: Vec<Option<TcpStream>>,
) {
    let mut tasks = Vec::new();
    let conns = conns.into_iter().chain(std::iter::repeat_with(|| None));
    for ((worker, generator), conn) in generators.drain(..).enumerate().zip(conns) {
        let s = shared.clone();
        tasks.push(tokio::task::spawn_local(worker_loop(
            s, worker, generator, conn,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn worker_loop(
    shared: Rc<Shared>,
    worker: usize,
    mut generator: Generator,
    mut conn: Option<TcpStream>,
) {
    let new_conn = shared.scenario.new_connection_per_request(worker);
    let timeout = shared.scenario.request_timeout();
    let mut request = Vec::with_capacity(1024);
    let mut buf = Vec::with_capacity(4096);
    while let Some(due) = next_slot(&shared) {
        if let Some(due) = due {
            wait_until(due, shared.scenario.precise_pacing).await;
        }
        let planned = generator.next(&mut request);
        let sent = Instant::now();
        let result =
            match tokio::time::timeout(timeout, send(&mut conn, &request, &mut buf, shared.addr))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(Failure::Timeout),
            };
        let keep = matches!(&result, Ok(Reply { close: false, .. })) && !new_conn;
        if !keep {
            conn = None;
        }
        let done = Instant::now();
        shared.record.borrow_mut().record(
            due.unwrap_or(sent) - shared.start,
            sent - shared.start,
            done - shared.start,
            &planned,
            result,
            &mut generator,
        );
    }
}

/// `None`: stop. `Some(None)`: send now (closed loop). `Some(Some(t))`: send at `t`.
#[allow(clippy::option_option)]
fn next_slot(shared: &Shared) -> Option<Option<Instant>> {
    let now = Instant::now();
    if now >= shared.end {
        return None;
    }
    let s = &shared.scenario;
    match s.pacing {
        Pacing::Closed => {
            let left = shared.counter.get();
            if left == 0 {
                return None;
            }
            shared.counter.set(left - 1);
            Some(None)
        }
        Pacing::Open => {
            let i = shared.counter.get();
            if i >= s.max_requests {
                return None;
            }
            let due = shared.start + Duration::from_secs_f64(i as f64 / s.rate);
            if due >= shared.end {
                return None;
            }
            shared.counter.set(i + 1);
            Some(Some(due))
        }
    }
}

/// Sleeps until `due`; tokio's timer fires on whole milliseconds, so with
/// `precise` the last millisecond is spent yielding instead.
async fn wait_until(due: Instant, precise: bool) {
    if !precise {
        tokio::time::sleep_until(due).await;
        return;
    }
    let now = Instant::now();
    if due > now + Duration::from_millis(2) {
        tokio::time::sleep_until(due - Duration::from_millis(1)).await;
    }
    while Instant::now() < due {
        // Spinning, but not hogging the core: Tansu shares it in run.sh, and a
        // broker kept waiting by the generator would be charged to the gateway.
        std::thread::yield_now();
        tokio::task::yield_now().await;
    }
}

async fn send(
    conn: &mut Option<TcpStream>,
    request: &[u8],
    buf: &mut Vec<u8>,
    addr: SocketAddr,
) -> Result<Reply, Failure> {
    let stream = match conn {
        Some(s) => s,
        None => conn.insert(client::connect(addr).await?),
    };
    client::exchange(stream, request, buf).await
}
