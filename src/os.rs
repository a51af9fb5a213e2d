//! The process and its operating system: librdkafka's threads run as
//! background work, the open-file limit is raised, transparent huge pages are declined
//! but where asked for (the dedup window's tables, in [`Blocks`]), and the
//! dedup window and the connections' head-read deadline read coarse clocks.
//! One of the modules with unsafe code: none of these has a safe binding in
//! std.
#![allow(unsafe_code)]

use libmimalloc_sys as mi;

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

/// The process's allocator: mimalloc (2.x, built without its huge-page
/// advice, standing in for the C library's `malloc` too: see main.rs). An
/// allocation whose alignment mimalloc gives every block of its size (at
/// most 16 bytes, and no more than the size) is a plain `mi_malloc`; the
/// mimalloc crate's allocator asks for the alignment on every allocation,
/// a few calls deeper before the same fast path.
pub struct Allocator;

/// The alignment every mimalloc block of at least this size has
/// (`MI_MAX_ALIGN_SIZE`).
const NATURAL_ALIGN: usize = 16;

fn natural(align: usize, size: usize) -> bool {
    align <= NATURAL_ALIGN && align <= size
}

/// A block of `layout` from `plain` when its alignment is natural for its
/// size, else from `aligned`.
///
/// # Safety
/// As `GlobalAlloc::alloc`.
#[inline]
unsafe fn pick(
    layout: std::alloc::Layout,
    plain: unsafe extern "C" fn(usize) -> *mut std::ffi::c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut std::ffi::c_void,
) -> *mut u8 {
    // SAFETY: mimalloc's allocation calls take any size and, for `aligned`,
    // any power of two (a layout's alignment is one).
    unsafe {
        if natural(layout.align(), layout.size()) {
            plain(layout.size()).cast()
        } else {
            aligned(layout.size(), layout.align()).cast()
        }
    }
}

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free`
// takes blocks of any of its allocation calls); a block is aligned as its
// layout asks, by `natural` (mimalloc's own test for a plain allocation) or
// by the aligned calls.
unsafe impl std::alloc::GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe { pick(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe { pick(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator; the new block keeps the
        // layout's alignment.
        unsafe {
            if natural(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// Turns transparent huge pages off for this process, except for memory
/// that asks for them (`madvise(MADV_HUGEPAGE)`): the dedup window's larger
/// tables ([`Blocks`]). mimalloc asked for huge pages on the gigabyte it
/// reserves at start, and the tables lived there: with huge pages its
/// resident set was twice the tables' size (`cargo bench --bench
/// dedup_memory`: 82 bytes per key with them, 43 without, at 10 million
/// keys, when the tables held 33 bytes per entry); it is built without that
/// advice (the `no_thp` feature). A kernel older than 6.18 has no
/// exception: huge pages are then off for all memory, the tables' too. The
/// flag counts at each page fault, so it also covers memory mapped before
/// the call. Call once, early.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        /// `PR_THP_DISABLE_EXCEPT_ADVISED` (Linux 6.18).
        const EXCEPT_ADVISED: libc::c_ulong = 1 << 1;
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag
        // on this process's memory map.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, EXCEPT_ADVISED, 0, 0) };
        if rc == 0 {
            return;
        }
        // SAFETY: as above.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "Cannot turn transparent huge pages off.");
        }
    }
}

/// A transparent huge page (x86_64 and aarch64 with 4 KiB pages).
const HUGE_PAGE: usize = 2 << 20;

/// `count` blocks of `block` bytes in one anonymous mapping, reserved at
/// once and backed page by page as blocks are used, advised for huge pages
/// (which [`no_transparent_huge_pages`] leaves on for it): the dedup
/// window's tables of one size, one block per shard, side by side, so that
/// the shards' tables fill whole huge pages and a lookup's address is
/// translated from a TLB entry of 2 MiB instead of 4 KiB. Each block has at
/// most one [`Block`] at a time; a block given back is returned to the
/// system.
pub(crate) struct Blocks {
    /// The mapping: its address and length.
    mapped: (usize, usize),
    /// The first block's address: the mapping's first huge-page boundary.
    start: usize,
    block: usize,
    taken: Box<[std::sync::atomic::AtomicBool]>,
}

impl Blocks {
    /// Reserves `count` blocks of `block` bytes (a multiple of 64); `None`
    /// when the system refuses the mapping, or off Linux.
    pub(crate) fn new(block: usize, count: usize) -> Option<std::sync::Arc<Blocks>> {
        if block == 0 || !block.is_multiple_of(64) || count == 0 {
            return None;
        }
        #[cfg(target_os = "linux")]
        {
            let bytes = block.checked_mul(count)?;
            let len = bytes.checked_add(HUGE_PAGE)?;
            // SAFETY: a new private anonymous mapping at an address of the
            // kernel's choice: no memory the program uses is touched.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            let base = p.expose_provenance();
            let start = base.next_multiple_of(HUGE_PAGE);
            // SAFETY: the range lies inside the mapping just made; advice
            // changes no contents. Without huge pages the blocks still work.
            unsafe {
                libc::madvise(
                    std::ptr::with_exposed_provenance_mut(start),
                    bytes,
                    libc::MADV_HUGEPAGE,
                );
            }
            Some(std::sync::Arc::new(Blocks {
                mapped: (base, len),
                start,
                block,
                taken: (0..count)
                    .map(|_| std::sync::atomic::AtomicBool::new(false))
                    .collect(),
            }))
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Block `index` as `block / size_of::<T>()` values of `T::default()`;
    /// `None` when it is taken already or there is no such block.
    pub(crate) fn take<T: Copy + Default>(
        self: &std::sync::Arc<Self>,
        index: usize,
    ) -> Option<Block<T>> {
        let size = std::mem::size_of::<T>();
        // A block holds whole, aligned values of T (blocks start at multiples
        // of their size from a huge-page boundary).
        if size == 0
            || !self.block.is_multiple_of(size)
            || !self.block.is_multiple_of(std::mem::align_of::<T>())
        {
            return None;
        }
        let taken = self.taken.get(index)?;
        if taken.swap(true, std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let len = self.block / size;
        let at: *mut T = std::ptr::with_exposed_provenance_mut(self.start + index * self.block);
        for i in 0..len {
            // SAFETY: the block lies inside the mapping (index < count, and
            // the mapping holds count blocks past `start`), which is readable
            // and writable and lives as long as `self`; `at` is aligned for T
            // (see above); and no other Block covers it (its flag was clear).
            unsafe { at.add(i).write(T::default()) };
        }
        Some(Block {
            blocks: self.clone(),
            index,
            len,
            _values: std::marker::PhantomData,
        })
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: the mapping made in `new`; every Block holds an Arc of
        // `self`, so none is left to use it.
        unsafe {
            libc::munmap(
                std::ptr::with_exposed_provenance_mut(self.mapped.0),
                self.mapped.1,
            );
        }
    }
}

/// One block of [`Blocks`], as values of `T`: the only reference to it
/// while it lives; dropped, its pages go back to the system.
pub(crate) struct Block<T: Copy> {
    blocks: std::sync::Arc<Blocks>,
    index: usize,
    len: usize,
    _values: std::marker::PhantomData<T>,
}

impl<T: Copy> Block<T> {
    fn at(&self) -> *mut T {
        std::ptr::with_exposed_provenance_mut(self.blocks.start + self.index * self.blocks.block)
    }
}

impl<T: Copy> std::ops::Deref for Block<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` values written in `take`, in the mapping `blocks`
        // keeps alive, covered by no other Block; shared for as long as
        // `self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.at(), self.len) }
    }
}

impl<T: Copy> std::ops::DerefMut for Block<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `self` is borrowed mutably, so this
        // slice is the only reference to the block.
        unsafe { std::slice::from_raw_parts_mut(self.at(), self.len) }
    }
}

impl<T: Copy> Drop for Block<T> {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: this block's range, inside the mapping; no slice of it
        // outlives `self` (T is Copy: nothing to drop in it). Its pages are
        // freed and read as zeros if used again.
        unsafe {
            libc::madvise(self.at().cast(), self.blocks.block, libc::MADV_DONTNEED);
        }
        self.blocks.taken[self.index].store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Seconds since the Unix epoch, from the kernel's coarse clock: the time
/// of the last timer tick (a few milliseconds old at most), read without
/// reading the hardware clock. On a VM whose clock source is not the TSC
/// each precise read is a system call; the dedup window reads the time
/// twice per postback and only needs seconds.
pub fn coarse_unix_seconds() -> u64 {
    if let Some(ts) = coarse(COARSE_REALTIME) {
        return u64::try_from(ts.tv_sec).unwrap_or(0);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds on the monotonic clock as of the kernel's last timer tick
/// (a few milliseconds old at most), read without the hardware clock.
pub(crate) fn coarse_monotonic_ms() -> u64 {
    if let Some(ts) = coarse(COARSE_MONOTONIC) {
        return ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000;
    }
    static EPOCH: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    EPOCH.elapsed().as_millis() as u64
}

#[cfg(target_os = "linux")]
const COARSE_REALTIME: libc::clockid_t = libc::CLOCK_REALTIME_COARSE;
#[cfg(target_os = "linux")]
const COARSE_MONOTONIC: libc::clockid_t = libc::CLOCK_MONOTONIC_COARSE;
#[cfg(not(target_os = "linux"))]
const COARSE_REALTIME: i32 = 0;
#[cfg(not(target_os = "linux"))]
const COARSE_MONOTONIC: i32 = 0;

/// The kernel's coarse clock `id`: the time of its last timer tick, read
/// without the hardware clock. None off Linux.
#[cfg(target_os = "linux")]
fn coarse(id: libc::clockid_t) -> Option<libc::timespec> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    (unsafe { libc::clock_gettime(id, &mut ts) } == 0).then_some(ts)
}

#[cfg(not(target_os = "linux"))]
fn coarse(_id: i32) -> Option<libc::timespec> {
    None
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
        // 1 | PR_THP_DISABLE_EXCEPT_ADVISED where the kernel has it.
        assert!(flag == 1 || flag == 3, "{flag}");
    }

    /// The kernel's pages of the mapping that holds `addr`: (resident,
    /// in huge pages), in KiB, from /proc/self/smaps.
    fn pages_of(addr: usize) -> (u64, u64) {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        let (mut rss, mut huge) = (0, 0);
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = (a..b).contains(&addr);
                        continue;
                    }
                }
            }
            let kib = |l: &str| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
            if inside && line.starts_with("Rss:") {
                rss = kib(line);
            }
            if inside && line.starts_with("AnonHugePages:") {
                huge = kib(line);
            }
        }
        (rss, huge)
    }

    #[test]
    fn a_block_is_its_taker_s_alone_and_starts_from_defaults() {
        let blocks = Blocks::new(4096, 3).unwrap();
        let mut a = blocks.take::<u64>(0).unwrap();
        assert_eq!(a.len(), 512);
        assert!(a.iter().all(|&v| v == 0));
        assert!(blocks.take::<u64>(0).is_none(), "taken twice");
        assert!(blocks.take::<u64>(3).is_none(), "past the last block");
        let mut b = blocks.take::<u64>(1).unwrap();
        a.fill(7);
        b.fill(9);
        assert!(a.iter().all(|&v| v == 7) && b.iter().all(|&v| v == 9));
        drop(a);
        let a = blocks.take::<u64>(0).unwrap();
        assert!(a.iter().all(|&v| v == 0), "a block given back starts over");
        assert!(b.iter().all(|&v| v == 9));
        // Values that do not tile the block are refused.
        assert!(blocks.take::<[u8; 3]>(2).is_none());
        drop(blocks);
        assert_eq!(a.len(), 512, "the blocks live as long as a block of them");
    }

    #[test]
    fn blocks_are_in_huge_pages_where_the_process_allows_them_and_go_back_when_given_back() {
        no_transparent_huge_pages();
        // SAFETY: PR_GET_THP_DISABLE takes no pointer; it returns the flag.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        let blocks = Blocks::new(HUGE_PAGE, 2).unwrap();
        let block = blocks.take::<u64>(0).unwrap();
        let at = block.as_ptr() as usize;
        assert_eq!(at % HUGE_PAGE, 0);
        let (rss, huge) = pages_of(at);
        assert!(rss >= 2048, "the block is resident: {rss} KiB");
        if flag == 3 && !thp.contains("[never]") {
            assert_eq!(huge, 2048, "in a huge page");
        }
        drop(block);
        assert_eq!(pages_of(at), (0, 0), "given back to the system");
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
