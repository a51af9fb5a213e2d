//! The process and its operating system: librdkafka's threads run as
//! background work, the C heap it allocates from keeps what it freed for a
//! while, the open-file limit is raised, transparent huge pages are declined,
//! and the dedup window reads a coarse clock. The module with unsafe code:
//! none of these has a safe binding in std.
#![allow(unsafe_code)]

/// Runs `f` on a new thread whose scheduling policy is `SCHED_BATCH`, and
/// returns what it returns. Threads started from there (librdkafka's main
/// thread, and through it every broker thread, also those added later)
/// inherit the policy.
///
/// A `SCHED_BATCH` thread gets its fair share of the CPU but does not preempt
/// the thread running on its core when it wakes up. librdkafka wakes its
/// broker thread for every first message of a batch and every reply; on a
/// busy core each of those wake-ups used to interrupt a request half-way,
/// and the broker thread then sent smaller batches more often. Measured on
/// the load tests: about a fifth more postbacks per second on a saturated
/// core, with a lower p99. On an idle core nothing changes.
pub(crate) fn start_as_background<T, F>(f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = std::thread::Builder::new()
        .name("kafka-start".into())
        .spawn(move || {
            set_background_policy();
            f()
        })?;
    match handle.join() {
        Ok(v) => Ok(v),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(target_os = "linux")]
fn set_background_policy() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread; `param` is a valid, live
    // sched_param for the duration of the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "Cannot set SCHED_BATCH for the Kafka client's threads.");
    }
}

#[cfg(not(target_os = "linux"))]
fn set_background_policy() {}

/// Lets the C heap (librdkafka's messages and buffers; Rust code allocates
/// from mimalloc) keep up to 128 MiB freed at the top of each of its arenas
/// instead of returning it at once, and grow 16 MiB at a time. glibc's
/// defaults trim and regrow the heap of librdkafka's threads many times a
/// second under load, each time with page faults and zeroed pages: measured
/// on the load tests, 1.5-2.5 us of CPU per postback at 20k postbacks/s.
/// The price: after a burst (a Kafka outage fills librdkafka's queue, up to
/// 200,000 messages) the freed memory stays with the process, up to that
/// threshold per arena. Call once, before the Kafka clients start.
pub fn keep_c_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before
        // the threads that allocate through it start.
        let ok = unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20) == 1
                && libc::mallopt(libc::M_TOP_PAD, 16 << 20) == 1
        };
        if !ok {
            tracing::debug!("Cannot set the C heap's trim threshold.");
        }
    }
}

/// Turns transparent huge pages off for this process. mimalloc asks for huge
/// pages on the gigabyte it reserves at start (`madvise(MADV_HUGEPAGE)`), and
/// the dedup window's tables live there: with huge pages its resident set
/// was twice the tables' size (`cargo bench --bench dedup_memory`: 82 bytes
/// per key with them, 43 without, at 10 million keys, when the tables held 33
/// bytes per entry). The flag counts at each page fault, so it also covers memory
/// mapped before the call. Call once, early.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag
        // on this process's memory map.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "Cannot turn transparent huge pages off.");
        }
    }
}

/// Seconds since the Unix epoch, from the kernel's coarse clock: the time
/// of the last timer tick (a few milliseconds old at most), read without
/// reading the hardware clock. On a VM whose clock source is not the TSC
/// each precise read is a system call; the dedup window reads the time
/// twice per postback and only needs seconds.
pub fn coarse_unix_seconds() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to fill.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
            return u64::try_from(ts.tv_sec).unwrap_or(0);
        }
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since the unix epoch, as the dedup window and the spool stamp
/// events; injectable so tests use a fixed clock.
pub type Clock = std::sync::Arc<dyn Fn() -> u32 + Send + Sync>;

/// The real clock, to the second (the kernel's coarse clock: see
/// [`coarse_unix_seconds`]).
pub fn system_clock() -> Clock {
    std::sync::Arc::new(|| coarse_unix_seconds() as u32)
}

/// Raises this process's open-file limit to its hard limit (every connection
/// and every spool segment is a file descriptor; distributions often start
/// services at 1,024). Returns the soft limit before and after.
pub fn raise_open_files() -> std::io::Result<(u64, u64)> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid rlimit for getrlimit to fill and for
        // setrlimit to read; both only touch this process's limits.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let before = lim.rlim_cur;
            if lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok((before, lim.rlim_cur))
        }
    }
    #[cfg(not(unix))]
    Ok((0, 0))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The scheduling policy of a thread, from /proc (field 41 of `stat`).
    fn policy(tid: &str) -> u32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // The command name is in parentheses and may hold spaces: count after it.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(38).unwrap().parse().unwrap()
    }

    #[test]
    fn the_coarse_clock_agrees_with_the_system_clock_to_the_second() {
        let precise = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let coarse = coarse_unix_seconds();
        // The coarse clock lags by at most a tick: the same second, or the one before.
        assert!(
            coarse == precise || coarse + 1 == precise,
            "{coarse} vs {precise}"
        );
    }

    #[test]
    fn transparent_huge_pages_are_off_after_the_call() {
        no_transparent_huge_pages();
        // SAFETY: PR_GET_THP_DISABLE takes no pointer; it returns the flag.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
    }

    #[test]
    fn threads_started_inside_inherit_the_batch_policy() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let grandchild = start_as_background(move || {
            // A thread started from inside, as librdkafka starts its own.
            std::thread::spawn(move || {
                let tid = std::fs::read_link("/proc/thread-self").unwrap();
                tx.send(tid.file_name().unwrap().to_string_lossy().into_owned())
                    .unwrap();
                let _ = stop_rx.recv();
            })
        })
        .unwrap();
        let tid = rx.recv().unwrap();
        assert_eq!(policy(&tid), libc::SCHED_BATCH as u32);
        // This thread was not touched.
        let own = std::fs::read_link("/proc/thread-self").unwrap();
        assert_eq!(policy(&own.file_name().unwrap().to_string_lossy()), 0);
        stop_tx.send(()).unwrap();
        grandchild.join().unwrap();
    }
}
