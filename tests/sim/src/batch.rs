//! Many seeds, side by side: one thread per job, each pinned to a CPU of
//! its own and running its seeds one after another on a runtime of its own.
//!
//! A world is one thread handing every statement to its SQLite connections'
//! threads and waiting for the answer. Left to roam, those threads land on
//! different CPUs and every hand-off is a wake-up across CPUs; pinned
//! together, it is a switch on one CPU, which costs far less (on the
//! two-core machine of BENCHMARKS.md one world runs 2.6 times as fast
//! pinned). Threads a job starts inherit its CPU, so the connections' threads
//! stay with their world. A seed's run does not depend on which job runs it
//! or on what runs beside it: each world has its own databases, clocks and
//! generators.

use crate::{Options, SeedRun, run_seed};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// Most jobs one batch runs at once.
pub const JOBS_MAX: usize = 64;

/// Which seeds to run, and how.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The first seed.
    pub from: u64,
    /// How many seeds.
    pub seeds: u64,
    /// Seeds run at once (1 to [`JOBS_MAX`]).
    pub jobs: usize,
    /// Run every seed twice and count a different trace as a failure.
    pub twice: bool,
}

/// The jobs a batch runs when none are asked for: one per CPU this process
/// may use.
#[must_use]
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(JOBS_MAX)
}

/// Run the batch's seeds, handing each run to `each` in seed order as soon
/// as it and every seed before it are done. A run's failures include, with
/// [`Batch::twice`], a second run whose trace differs.
///
/// # Errors
/// When a world cannot be set up (the first such error; no later seed is
/// started), or a job's runtime cannot be made.
pub fn run_batch(
    batch: &Batch,
    options: &Options,
    mut each: impl FnMut(SeedRun),
) -> anyhow::Result<()> {
    let jobs = batch.jobs.clamp(1, JOBS_MAX);
    let end = batch.from.saturating_add(batch.seeds);
    let cpus = allowed_cpus();
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(u64, anyhow::Result<SeedRun>)>();
    std::thread::scope(|scope| {
        for job in 0..jobs {
            let tx = tx.clone();
            let (stop, cpu) = (&stop, cpus.get(job % cpus.len().max(1)).copied());
            scope.spawn(move || {
                if let Some(cpu) = cpu {
                    pin_to(cpu);
                }
                let mut seed = batch.from.saturating_add(job as u64);
                let runtime =
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(r) => r,
                        Err(e) => {
                            let e = anyhow::Error::from(e).context("cannot start a job's runtime");
                            let _ = tx.send((seed, Err(e)));
                            return;
                        }
                    };
                while seed < end && !stop.load(Ordering::Relaxed) {
                    let run = runtime
                        .block_on(run_checked(seed, options, batch.twice))
                        .map_err(|e| e.context(format!("seed {seed} could not be set up")));
                    if tx.send((seed, run)).is_err() {
                        return;
                    }
                    seed = seed.saturating_add(jobs as u64);
                }
            });
        }
        drop(tx);
        // Seeds come back in any order; they are handed on in seed order.
        let mut done: BTreeMap<u64, SeedRun> = BTreeMap::new();
        let mut next = batch.from;
        let mut error = None;
        for (seed, run) in rx {
            match run {
                Ok(run) => {
                    done.insert(seed, run);
                }
                Err(e) => {
                    // No new seed starts; those running finish.
                    stop.store(true, Ordering::Relaxed);
                    error.get_or_insert(e);
                }
            }
            while let Some(run) = done.remove(&next) {
                if error.is_none() {
                    each(run);
                }
                next += 1;
            }
        }
        error.map_or(Ok(()), Err)
    })
}

/// One seed, and with `twice` a second run compared with it.
async fn run_checked(seed: u64, options: &Options, twice: bool) -> anyhow::Result<SeedRun> {
    let mut run = run_seed(seed, options).await?;
    if twice {
        match run_seed(seed, options).await {
            Ok(again) if again.trace_hash != run.trace_hash => run.failures.push(format!(
                "the second run's trace differs ({:016x} then {:016x})",
                run.trace_hash, again.trace_hash
            )),
            Ok(_) => {}
            Err(e) => run.failures.push(format!("the second run could not be set up: {e:#}")),
        }
    }
    Ok(run)
}

/// The CPUs this process may run on (empty where that cannot be known).
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    use rustix::thread::{CpuSet, sched_getaffinity};
    sched_getaffinity(None)
        .map(|set| (0..CpuSet::MAX_CPU).filter(|&cpu| set.is_set(cpu)).collect())
        .unwrap_or_default()
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

/// Keep the calling thread, and the threads it starts from now on, on `cpu`.
/// Best effort: where the system refuses, the job runs unpinned (slower,
/// the same seeds).
#[cfg(target_os = "linux")]
fn pin_to(cpu: usize) {
    use rustix::thread::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    set.set(cpu);
    let _ = sched_setaffinity(None, &set);
}

#[cfg(not(target_os = "linux"))]
fn pin_to(_cpu: usize) {}
