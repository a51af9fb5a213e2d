//! What the kernel did for a server process during a run: context switches
//! per thread (grouped by thread name), page faults, system calls by kind
//! (counted by `perf stat` on the syscall tracepoints), and the machine's
//! CPU model. Counts are kept whole in the report; the summary and the table
//! divide them by the run's replies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Context switches and page faults of one process during a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KernelCounters {
    /// Sum over the process's threads of `voluntary_ctxt_switches`: the
    /// thread gave up the CPU (waited in epoll, on a futex, for I/O).
    pub voluntary_ctxt_switches: u64,
    /// Sum of `nonvoluntary_ctxt_switches`: the thread was preempted.
    pub nonvoluntary_ctxt_switches: u64,
    /// The same by thread name with its digits left out (`tokio-runtime-w`,
    /// `rdk:broker`, `rdk:main`, ...).
    pub threads: BTreeMap<String, ThreadGroup>,
    /// Threads that exited during the run: their switches are not counted.
    pub threads_exited: u32,
    /// Threads that started during the run (counted from zero).
    pub threads_started: u32,
    /// `minflt` of `/proc/PID/stat`: faults served without I/O (first touch
    /// of a page, copy on write), all threads, exited ones included.
    pub minor_faults: u64,
    /// `majflt`: faults that read from disk.
    pub major_faults: u64,
}

/// The threads of one name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ThreadGroup {
    /// How many threads of that name were there after the run.
    pub threads: u32,
    pub voluntary: u64,
    pub involuntary: u64,
}

/// A process's counters at one moment, to subtract from a later one.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// By thread id: name, voluntary and involuntary switches.
    threads: BTreeMap<u32, (String, u64, u64)>,
    minflt: u64,
    majflt: u64,
}

/// Reads `/proc/PID/task/*/{comm,status}` and `/proc/PID/stat`; `None` when
/// the process is gone.
pub fn snapshot(pid: u32) -> Option<Snapshot> {
    let (minflt, majflt) = faults(pid)?;
    let mut threads = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may exit between the listing and these reads.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let name = std::fs::read_to_string(entry.path().join("comm"))
            .map(|s| s.trim_end_matches('\n').to_owned())
            .unwrap_or_else(|_| "?".into());
        let field = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        threads.insert(
            tid,
            (
                name,
                field("voluntary_ctxt_switches:"),
                field("nonvoluntary_ctxt_switches:"),
            ),
        );
    }
    Some(Snapshot {
        threads,
        minflt,
        majflt,
    })
}

/// `minflt` and `majflt` of `/proc/PID/stat` (the whole process).
fn faults(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the ')' of the command name: state ppid pgrp session tty_nr tpgid
    // flags minflt cminflt majflt ...
    let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    Some((f.get(7)?.parse().ok()?, f.get(9)?.parse().ok()?))
}

/// A thread's name without its digits, the group it is counted in:
/// `rdk:broker1` and `rdk:broker-1` are both `rdk:broker`.
pub fn thread_group(name: &str) -> String {
    let s: String = name.chars().filter(|c| !c.is_ascii_digit()).collect();
    let t = s.trim_end_matches(['-', '_', '#', ' ', '/']);
    if t.is_empty() {
        name.to_owned()
    } else {
        t.to_owned()
    }
}

/// What happened between two snapshots of one process. A thread id seen
/// only after counts from zero; one seen only before has exited, and its
/// switches since the first snapshot are lost.
pub fn diff(before: &Snapshot, after: &Snapshot) -> KernelCounters {
    let mut c = KernelCounters {
        minor_faults: after.minflt.saturating_sub(before.minflt),
        major_faults: after.majflt.saturating_sub(before.majflt),
        ..Default::default()
    };
    for (tid, (name, vol, invol)) in &after.threads {
        let (v0, i0) = match before.threads.get(tid) {
            Some((_, v, i)) => (*v, *i),
            None => {
                c.threads_started += 1;
                (0, 0)
            }
        };
        let (dv, di) = (vol.saturating_sub(v0), invol.saturating_sub(i0));
        c.voluntary_ctxt_switches += dv;
        c.nonvoluntary_ctxt_switches += di;
        let g = c.threads.entry(thread_group(name)).or_default();
        g.threads += 1;
        g.voluntary += dv;
        g.involuntary += di;
    }
    c.threads_exited = before
        .threads
        .keys()
        .filter(|t| !after.threads.contains_key(t))
        .count() as u32;
    c
}

/// System calls of one process during a run, from `perf stat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Syscalls {
    /// Every system call (`raw_syscalls:sys_enter`).
    pub total: u64,
    /// By name, for the calls counted one by one (see [`SYSCALLS`]); the
    /// rest is `total` minus their sum.
    pub by_kind: BTreeMap<String, u64>,
    /// The CSV `perf stat -x,` wrote.
    pub csv: String,
}

/// The calls counted one by one: what tokio, hyper, mio, std, mimalloc and
/// librdkafka make on the hot path, and their cousins, so that a change of
/// call shows. A name the kernel has no tracepoint for is skipped.
pub const SYSCALLS: &[&str] = &[
    "futex",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
    "poll",
    "ppoll",
    "read",
    "readv",
    "recvfrom",
    "recvmsg",
    "write",
    "writev",
    "sendto",
    "sendmsg",
    "accept",
    "accept4",
    "close",
    "shutdown",
    "setsockopt",
    "getsockopt",
    "getsockname",
    "getpeername",
    "sched_yield",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "mremap",
    "brk",
    "openat",
    "pwrite64",
    "fsync",
    "fdatasync",
    "rt_sigprocmask",
    "sigaltstack",
    "getrandom",
    "ioctl",
];

/// The tracefs directory of syscall events, if mounted where perf looks.
fn tracefs_events() -> Option<PathBuf> {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.join("raw_syscalls").is_dir())
}

/// A running `perf stat` counting system calls of one process.
pub struct SyscallCounter {
    child: Child,
    csv: PathBuf,
}

/// Starts `perf stat -x, -o CSV -e raw_syscalls:sys_enter -e
/// syscalls:sys_enter_NAME... -p PID` and waits until it has opened its
/// counters on every thread, so that the run that follows is counted whole.
/// `Err` says why there will be no count.
pub fn start_syscalls(pid: u32, csv: &Path) -> Result<SyscallCounter, String> {
    let mut events = vec!["raw_syscalls:sys_enter".to_owned()];
    match tracefs_events() {
        Some(dir) => events.extend(
            SYSCALLS
                .iter()
                .filter(|n| dir.join(format!("syscalls/sys_enter_{n}")).is_dir())
                .map(|n| format!("syscalls:sys_enter_{n}")),
        ),
        // perf may know better (it mounts tracefs itself); let it say.
        None => events.extend(SYSCALLS.iter().map(|n| format!("syscalls:sys_enter_{n}"))),
    }
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("no process {pid}: {e}"))?
        .count();
    if let Some(dir) = csv.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut cmd = Command::new("perf");
    cmd.args(["stat", "-x,", "-o"]).arg(csv);
    for e in &events {
        cmd.args(["-e", e]);
    }
    cmd.args(["-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run perf: {e}"))?;
    // perf opens one counter per event and thread, then enables them all;
    // its file descriptors show when it is there.
    let want = events.len() * threads;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let first = err
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("no message");
            return Err(format!("perf stat exited ({status}): {first}"));
        }
        let open = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|l| l.to_string_lossy().contains("perf_event"))
                    })
                    .count()
            })
            .unwrap_or(0);
        if open >= want || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The counters are enabled right after the last is opened.
    std::thread::sleep(Duration::from_millis(50));
    Ok(SyscallCounter {
        child,
        csv: csv.to_owned(),
    })
}

/// A run that fails half-way must not leave perf attached to the server.
impl Drop for SyscallCounter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl SyscallCounter {
    /// Stops perf with SIGINT, as Ctrl-C would, and reads its CSV.
    pub fn stop(mut self) -> Result<Syscalls, String> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-INT", &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err("perf stat did not stop".into());
                }
            }
        }
        let text = std::fs::read_to_string(&self.csv)
            .map_err(|e| format!("cannot read {}: {e}", self.csv.display()))?;
        let mut s = parse_perf_csv(&text)?;
        s.csv = self.csv.display().to_string();
        Ok(s)
    }
}

/// Reads the lines `COUNT,UNIT,EVENT,...` of `perf stat -x,` (an interval
/// time first, if any, is skipped). `<not counted>` (the thread never ran
/// while counting) is 0; `<not supported>` or a missing total is an error.
pub fn parse_perf_csv(text: &str) -> Result<Syscalls, String> {
    let mut total = None;
    let mut by_kind = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let Some(ev) = f.iter().position(|x| x.contains("syscalls:sys_enter")) else {
            continue;
        };
        let Some(count) = ev.checked_sub(2).and_then(|i| f.get(i)) else {
            continue;
        };
        let n: u64 = match count.trim() {
            "<not counted>" => 0,
            c => match c.parse() {
                Ok(n) => n,
                Err(_) => return Err(format!("perf could not count {}: {c}", f[ev])),
            },
        };
        let event = f[ev].trim();
        if event == "raw_syscalls:sys_enter" {
            *total.get_or_insert(0) += n;
        } else if let Some(name) = event.strip_prefix("syscalls:sys_enter_") {
            *by_kind.entry(name.to_owned()).or_insert(0) += n;
        }
    }
    Ok(Syscalls {
        total: total.ok_or("no raw_syscalls:sys_enter count in perf's output")?,
        by_kind,
        csv: String::new(),
    })
}

/// The CPU's model name: `lscpu`'s "Model name", else the first "model
/// name" of /proc/cpuinfo; empty if neither says.
pub fn cpu_model() -> String {
    let from_lscpu = Command::new("lscpu")
        .env("LC_ALL", "C")
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("Model name:")
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty() && v != "-")
            })
        });
    from_lscpu
        .or_else(|| {
            std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
                t.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == "model name").then(|| v.trim().to_owned())
                })
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_are_grouped_without_digits() {
        assert_eq!(thread_group("rdk:broker1"), "rdk:broker");
        assert_eq!(thread_group("rdk:broker-1"), "rdk:broker");
        assert_eq!(thread_group("rdk:main"), "rdk:main");
        assert_eq!(thread_group("tokio-runtime-w"), "tokio-runtime-w");
        assert_eq!(thread_group("123"), "123");
    }

    #[test]
    fn new_threads_count_from_zero_and_exited_ones_are_counted_apart() {
        let t = |v: &[(u32, &str, u64, u64)]| {
            v.iter()
                .map(|&(tid, n, a, b)| (tid, (n.to_owned(), a, b)))
                .collect()
        };
        let before = Snapshot {
            threads: t(&[(1, "gw", 10, 1), (2, "rdk:broker1", 5, 0), (3, "old", 7, 7)]),
            minflt: 100,
            majflt: 2,
        };
        let after = Snapshot {
            threads: t(&[
                (1, "gw", 15, 1),
                (2, "rdk:broker1", 9, 1),
                (4, "rdk:broker2", 3, 2),
            ]),
            minflt: 130,
            majflt: 2,
        };
        let c = diff(&before, &after);
        assert_eq!(c.voluntary_ctxt_switches, 5 + 4 + 3);
        assert_eq!(c.nonvoluntary_ctxt_switches, 1 + 2);
        assert_eq!(
            c.threads["rdk:broker"],
            ThreadGroup {
                threads: 2,
                voluntary: 7,
                involuntary: 3
            }
        );
        assert_eq!((c.threads_started, c.threads_exited), (1, 1));
        assert_eq!((c.minor_faults, c.major_faults), (30, 0));
    }

    #[test]
    fn reads_perf_csv() {
        let text = "# started on Wed Dec  2 03:27:57 2026\n\n\
            654284,,raw_syscalls:sys_enter,378206787,100.00,,\n\
            600000,,syscalls:sys_enter_write,378135501,100.00,,\n\
            <not counted>,,syscalls:sys_enter_read,0,100.00,,\n";
        let s = parse_perf_csv(text).unwrap();
        assert_eq!(s.total, 654284);
        assert_eq!(s.by_kind["write"], 600000);
        assert_eq!(s.by_kind["read"], 0);
        // With -I, a time comes first.
        let s = parse_perf_csv("1.0001,5,,raw_syscalls:sys_enter,1,100.00,,\n").unwrap();
        assert_eq!(s.total, 5);
        assert!(parse_perf_csv("<not supported>,,raw_syscalls:sys_enter,0,0,,\n").is_err());
        assert!(parse_perf_csv("").is_err());
    }

    #[test]
    fn reads_its_own_threads_and_faults() {
        let me = std::process::id();
        let a = snapshot(me).unwrap();
        let _v: Vec<u8> = vec![1; 1 << 22];
        std::thread::spawn(|| std::thread::sleep(Duration::from_millis(5)))
            .join()
            .unwrap();
        let b = snapshot(me).unwrap();
        let c = diff(&a, &b);
        assert!(c.minor_faults > 0);
        assert!(!c.threads.is_empty());
    }
}
