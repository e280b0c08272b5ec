//! Gives back to the OS the memory a connection closed with a large reply queue leaves
//! free, where the allocator would keep it.
//!
//! glibc's malloc serves a large block with its own mapping, given back when freed, but
//! raises that threshold to the size of the largest such block freed (up to 32 MiB). Once
//! the first peer that stopped reading is closed, the next ones' reply queues (up to the
//! high-water mark, 1 MiB by default, in buffers that doubled on the way) come from its
//! arenas instead, and freed arena memory between live blocks stays resident: a server
//! closing such peers every few seconds grows towards the most its arenas ever held,
//! fragmented (the soak example: +60 MiB in 10 minutes, with nothing still counted).
//! `malloc_trim` returns those free pages. Other allocators need nothing: with musl, or
//! jemalloc / mimalloc as the global allocator, there is nothing to do or little to trim.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A connection closed holding at least this much (queued replies) is worth a trim:
/// smaller blocks come from the arenas' bins and are reused as they are.
pub(crate) const RELEASE_AFTER: usize = 256 * 1024;

/// How long a trim waits after being asked for: peers closed together (a burst of stall
/// timeouts) free their memory within a moment of each other, and one trim, which walks
/// every arena under its lock, then returns all of it. At most one trim per this long.
const DELAY: Duration = Duration::from_secs(1);

/// A trim is scheduled and has not started: later requests are covered by it.
static PENDING: AtomicBool = AtomicBool::new(false);

/// Returns free heap pages to the OS, [`DELAY`] from now (at once outside a runtime).
pub(crate) fn release_freed_memory() {
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let pending = Pending;
            runtime.spawn(async move {
                tokio::time::sleep(DELAY).await;
                drop(pending);
                // Off the workers: a trim of a fragmented heap can take milliseconds.
                let _ = tokio::task::spawn_blocking(trim_now).await;
            });
        }
        Err(_) => {
            drop(Pending);
            trim_now();
        }
    }
}

/// Clears [`PENDING`] when dropped: before the trim, so that memory freed while it runs
/// asks for the next one; or with the task, if the runtime shuts down first.
struct Pending;

impl Drop for Pending {
    fn drop(&mut self) {
        PENDING.store(false, Ordering::Release);
    }
}

fn trim_now() {
    let started = Instant::now();
    let released = trim();
    tracing::debug!(
        released,
        took_us = started.elapsed().as_micros() as u64,
        "returned freed heap memory to the OS"
    );
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // The crate's second exception to `deny(unsafe_code)`: a libc call.
fn trim() -> bool {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: `malloc_trim` takes no pointer and locks each arena itself; glibc documents
    // it as thread-safe (MT-Safe).
    unsafe { malloc_trim(0) != 0 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
