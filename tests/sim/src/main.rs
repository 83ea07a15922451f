//! `skald-sim`: run seeds of the deterministic simulation and report the
//! rate and every failing seed, with the command that replays it.

use clap::Parser;
use sagas::planted::Mistake;
use skald_sim::{
    Batch, Faults, JOBS_MAX, Options, STATEMENT_FAULTS_DEFAULT, default_jobs, run_batch,
};
use std::process::ExitCode;
use std::time::Instant;

/// Run the engine under seeded faults on simulated time; each failure is a
/// seed that replays the same run.
///
/// Failing seeds are printed as they come, a summary at the end; every 1,000
/// seeds a line on standard error says how far the run got. The worlds'
/// databases live in /dev/shm/skald-sim-<process id> (when there is a
/// /dev/shm); a run removes what killed runs left there.
#[derive(Debug, Parser)]
#[command(name = "skald-sim", version)]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Orchestrator instances per world (1 to 3); unset, each seed chooses.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3))]
    instances: Option<u64>,
    /// Sagas per world.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=200))]
    sagas: u64,
    /// Random actions per world before it heals.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    actions: u64,
    /// Chance in a hundred that a message is lost.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=90))]
    drop: u32,
    /// Chance in a hundred that a message is delivered twice.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=90))]
    duplicate: u32,
    /// Chance in a hundred that an instance's store operation fails.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=50))]
    store_faults: u32,
    /// Chance in a million that a step of an SQL statement (of the
    /// orchestrator instances and the participants, `COMMIT` included) fails.
    #[arg(long, default_value_t = STATEMENT_FAULTS_DEFAULT, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    statement_faults: u32,
    /// No crashes of orchestrator instances or participants.
    #[arg(long)]
    no_crashes: bool,
    /// No operator actions.
    #[arg(long)]
    no_operators: bool,
    /// No instance freezing (its leases running out) and waking later.
    #[arg(long)]
    no_freezes: bool,
    /// No clock jumps (else an instance's clock jumps, forward or back, to within 750 ms of the world's).
    #[arg(long)]
    no_clock_jumps: bool,
    /// Put a known mistake back into the engine, to see the seeds catch it:
    /// undo-oldest-first, unknown-not-undone, no-fence, no-tombstone or key-per-attempt.
    #[arg(long, value_parser = parse_mistake)]
    plant: Option<Mistake>,
    /// Print every seed's trace.
    #[arg(long)]
    trace: bool,
    /// Run every seed twice and fail if the two traces differ.
    #[arg(long)]
    twice: bool,
    /// Seeds run at once, each job on a CPU of its own (default: one per CPU
    /// this process may use). Results are printed in seed order either way.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=JOBS_MAX as u64))]
    jobs: Option<u64>,
}

fn parse_mistake(name: &str) -> Result<Mistake, String> {
    Mistake::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Mistake::ALL.iter().map(|m| m.as_str()).collect();
        format!("no mistake `{name}`; known: {}", known.join(", "))
    })
}

impl Args {
    /// The flags that shape a world, as given (for the replay command).
    fn world_flags(&self) -> String {
        let mut flags = format!(
            "--sagas {} --actions {} --drop {} --duplicate {} --store-faults {} --statement-faults {}",
            self.sagas,
            self.actions,
            self.drop,
            self.duplicate,
            self.store_faults,
            self.statement_faults
        );
        if let Some(n) = self.instances {
            flags.push_str(&format!(" --instances {n}"));
        }
        for (off, flag) in [
            (self.no_crashes, "--no-crashes"),
            (self.no_operators, "--no-operators"),
            (self.no_freezes, "--no-freezes"),
            (self.no_clock_jumps, "--no-clock-jumps"),
        ] {
            if off {
                flags.push(' ');
                flags.push_str(flag);
            }
        }
        if let Some(m) = self.plant {
            flags.push_str(&format!(" --plant {}", m.as_str()));
        }
        flags
    }
}

/// How often a long run says how far it got (on standard error).
const PROGRESS_EVERY: u64 = 1_000;

fn main() -> ExitCode {
    let args = Args::parse();
    sagas::planted::plant(args.plant);
    let options = Options {
        sagas: usize::try_from(args.sagas).unwrap_or(6),
        instances: args.instances.and_then(|n| usize::try_from(n).ok()),
        actions: usize::try_from(args.actions).unwrap_or(300),
        faults: Faults {
            drop: args.drop,
            duplicate: args.duplicate,
            crashes: !args.no_crashes,
            operators: !args.no_operators,
            freezes: !args.no_freezes,
            clock_jumps: !args.no_clock_jumps,
            store: args.store_faults,
            statements: args.statement_faults,
            ..Faults::default()
        },
        keep_trace: args.trace,
    };
    let batch = Batch {
        from: args.from,
        seeds: args.seeds,
        jobs: args.jobs.and_then(|j| usize::try_from(j).ok()).unwrap_or_else(default_jobs),
        twice: args.twice,
    };
    let swept = skald_sim::sweep_killed_runs();
    if swept > 0 {
        eprintln!("skald-sim: removed what {swept} killed run(s) left in /dev/shm");
    }
    let began = Instant::now();
    let mut failed = Vec::new();
    let mut ended = std::collections::BTreeMap::new();
    let mut done = 0_u64;
    let result = run_batch(&batch, &options, |run| {
        let seed = run.seed;
        done += 1;
        if done.is_multiple_of(PROGRESS_EVERY) && done < args.seeds {
            let secs = began.elapsed().as_secs_f64();
            eprintln!(
                "skald-sim: {done} of {} seeds in {secs:.0} s ({:.1} seeds/s), {} failed",
                args.seeds,
                done as f64 / secs.max(1e-9),
                failed.len()
            );
        }
        for line in &run.trace {
            println!("seed {seed}: {line}");
        }
        for (status, n) in &run.ended {
            *ended.entry(status.clone()).or_insert(0) += n;
        }
        if !run.failures.is_empty() {
            println!("seed {seed} FAILED (trace {:016x}):", run.trace_hash);
            for f in &run.failures {
                println!("  {f}");
            }
            println!(
                "  replay: cargo run -p skald-sim -- --from {seed} --seeds 1 --trace {}",
                args.world_flags()
            );
            failed.push(seed);
        }
    });
    if let Err(e) = result {
        eprintln!("skald-sim: {e:#}");
        return ExitCode::FAILURE;
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "{} seeds from {} in {secs:.1} s ({:.1} seeds/s, {} jobs); sagas ended {ended:?}; {} failed{}",
        args.seeds,
        args.from,
        args.seeds as f64 / secs.max(1e-9),
        batch.jobs,
        failed.len(),
        if failed.is_empty() { String::new() } else { format!(": {failed:?}") }
    );
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
