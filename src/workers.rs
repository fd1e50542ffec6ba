//! The compute threads' place beside the caller's. Generation, compression
//! and decoding run on rayon's global pool, one thread per core: on a 2-core
//! machine a large miss keeps both cores busy, and Node's event loop thread
//! waited up to 12-17 ms for a core. Loaded by Node, the pool's threads run
//! at a lower priority (their niceness raised by 10 by default), so the event
//! loop thread takes a core as soon as it has work, while the pool still gets
//! every cycle this process's other threads leave. The price: against other
//! processes' CPU-bound work at normal priority, the pool gets a small share
//! (about a tenth at +10), so on a saturated machine misses slow down.
//! `SCENARIO_MATRIX_CACHE_WORKER_NICE` sets how much the niceness is raised
//! (0 to 19; 0 leaves the threads at the process's priority).

/// How much the pool's threads' niceness is raised when the variable is unset.
const DEFAULT_NICE: i32 = 10;

/// The raise `SCENARIO_MATRIX_CACHE_WORKER_NICE` asks for, or the default
/// when it is unset or not a number in 0..=19.
pub fn worker_nice() -> i32 {
    std::env::var("SCENARIO_MATRIX_CACHE_WORKER_NICE")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .filter(|n| (0..=19).contains(n))
        .unwrap_or(DEFAULT_NICE)
}

/// Builds rayon's global pool with threads that lower their own priority as
/// they start. A no-op if the pool already exists (the embedding program
/// built it) or the niceness is 0.
///
/// Called from the addon's load, it builds the pool on a thread of its own:
/// the loader lock is held while the addon loads, each new pool thread takes
/// it once (registering its thread-local destructors), and rayon waits for
/// its threads to start, so building the pool on the loading thread would
/// never return. A call that needs the pool meanwhile waits for it.
pub fn lower_priority_of_pool() {
    let nice = worker_nice();
    if nice == 0 {
        return;
    }
    let build = move || {
        let _ = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("scenario-work-{i}"))
            .start_handler(move |_| lower_this_thread(nice))
            .build_global();
    };
    // Without a thread (the OS refused one) the pool is rayon's default.
    let _ = std::thread::Builder::new()
        .name("scenario-pool-setup".into())
        .spawn(build);
}

/// Raises the calling thread's niceness by `nice` (Linux: a thread's
/// priority is its own, so `who = 0` means this thread, not the process).
fn lower_this_thread(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        const PRIO_PROCESS: std::os::raw::c_int = 0;
        extern "C" {
            fn getpriority(which: std::os::raw::c_int, who: u32) -> std::os::raw::c_int;
            fn setpriority(
                which: std::os::raw::c_int,
                who: u32,
                prio: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        // SAFETY: both calls only read or set this thread's scheduling
        // priority; a refusal leaves it unchanged, which is harmless.
        unsafe {
            let current = getpriority(PRIO_PROCESS, 0);
            setpriority(PRIO_PROCESS, 0, (current + nice).min(19));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn pool_threads_run_lower_than_their_caller() {
        // A pool of our own (the global one may exist already in a test run).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .start_handler(|_| super::lower_this_thread(5))
            .build()
            .unwrap();
        let read = || std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let nice = |stat: String| -> i64 {
            // Field 19 (niceness) counts from after the command's ")".
            let rest = stat.rsplit(')').next().unwrap().to_string();
            rest.split_whitespace().nth(16).unwrap().parse().unwrap()
        };
        let here = nice(read());
        let there = pool.install(|| nice(read()));
        assert_eq!(there, (here + 5).min(19));
    }
}
