//! The local executor: trains a sweep's runs in this process, each exactly as `hnca vae` (or
//! `bandit`) alone would with its files in its directory, then evaluates it into eval.json. The
//! runs of one estimator train as one batch (`--batch` caps its size; [`crate::run::batch`]):
//! one step for all of them. On the CPU several batches (or, with `--batch 1`, single runs)
//! train at once on threads of their own, their operations sharing the thread pool (threads
//! over runs and over rows); on a GPU the batches train one after another. A run's numbers do
//! not depend on what runs beside it.
//!
//! A run that diverges writes diverged.json (its last good checkpoint stays) and the others go
//! on. A signal stops every run at its next step boundary with a checkpoint, and starts no
//! other; the same command later continues them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::grid::{status, RunFiles, RunSpec, Status};
use super::{EvalSettings, GridOptions, SweepExperiment};
use crate::backend::cpu::Cpu;
use crate::backend::kernels::KernelBackend;
use crate::backend::Backend;
use crate::data::{Mnist, Split};
use crate::error::Error;
use crate::run::files::write_atomically;
use crate::run::interrupt;
use crate::run::schedule::total_steps;
use crate::setup::{set_up, Setup};

/// A run of this process, with where it got to.
struct Planned<A> {
    spec: RunSpec,
    files: RunFiles,
    args: A,
}

/// How a run ended here.
#[derive(Debug)]
enum Outcome {
    Finished,
    Diverged {
        step: u64,
        what: String,
    },
    /// Stopped by a signal, its checkpoint written.
    Interrupted,
    Failed(String),
}

/// Trains `runs` (of the sweep whose shared options are `base`) here.
pub fn run<A: SweepExperiment>(base: &A, runs: &[RunSpec], g: &GridOptions) -> Result<(), Error> {
    interrupt::install();
    let Setup { mut data, gpu, place, .. } = set_up(base.setup_args(), "training")?;
    base.prepare_data(&mut data)?;
    std::fs::create_dir_all(&g.out).map_err(|source| Error::Io { path: g.out.clone(), source })?;
    let mut todo = Vec::new();
    for spec in runs {
        let files = RunFiles::new(&g.out, &spec.name);
        let opts = base.for_run(&spec.estimator, spec.seed, &files, false)?.to_config()?.run_options();
        let total = total_steps(data.train.n, opts.batch_size, opts.epochs, opts.max_steps);
        match status(&files, total) {
            Status::Finished => eprintln!("hnca sweep: {}: finished, skipped", spec.name),
            Status::Diverged(step) => eprintln!(
                "hnca sweep: {}: diverged at step {step}, skipped (remove {} to train it again)",
                spec.name,
                files.diverged.display()
            ),
            s => {
                let args = base.for_run(&spec.estimator, spec.seed, &files, s == Status::Started)?;
                todo.push(Planned { spec: spec.clone(), files, args });
            }
        }
    }
    if todo.is_empty() {
        eprintln!("hnca sweep: all {} runs are done", runs.len());
        return Ok(());
    }
    let test = first_images(&data.test, g.eval_images);
    let units = units(&todo, g.batch.map_or(usize::MAX, |b| b as usize));
    let shape = match units.len() {
        n if n == todo.len() => String::new(),
        1 => " as one batch".to_string(),
        n => format!(" in {n} batches"),
    };
    let outcomes = match gpu {
        Some(d) => {
            if g.parallel.is_some_and(|p| p > 1) {
                eprintln!("hnca sweep: note: on a GPU the batches train one after another; --parallel applies to the CPU");
            }
            eprintln!("hnca sweep: {} of {} runs to train{shape} on {place}, one after another", todo.len(), runs.len());
            let be = KernelBackend::new(d);
            let mut outcomes: Vec<Option<Outcome>> = todo.iter().map(|_| None).collect();
            for unit in &units {
                for (i, o) in attempt_unit(&be, &todo, unit, &data, &test, g.eval_k) {
                    outcomes[i] = Some(o);
                }
            }
            outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Interrupted)).collect()
        }
        None => {
            let parallel = g.parallel.unwrap_or_else(rayon::current_num_threads).min(units.len()).max(1);
            let at_once = match units.len() {
                1 => String::new(),
                n if n == todo.len() => format!(", {parallel} at once"),
                _ => format!(", {parallel} batch{} at once", if parallel == 1 { "" } else { "es" }),
            };
            eprintln!("hnca sweep: {} of {} runs to train{shape} on {place}{at_once}", todo.len(), runs.len());
            in_parallel(&Cpu::new(), &todo, &units, &data, &test, g.eval_k, parallel)
        }
    };
    summarise(&todo, &outcomes)
}

/// Trains `units` of `todo` on `parallel` threads, each taking the next unit when its last one
/// ends; none starts once a signal has come.
fn in_parallel<A: SweepExperiment, B: Backend + Sync>(
    be: &B,
    todo: &[Planned<A>],
    units: &[Vec<usize>],
    data: &Mnist,
    test: &Split,
    k: usize,
    parallel: usize,
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<Outcome>>> = Mutex::new(todo.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let u = next.fetch_add(1, Ordering::SeqCst);
                if u >= units.len() {
                    break;
                }
                for (i, o) in attempt_unit(be, todo, &units[u], data, test, k) {
                    outcomes.lock().expect("a run thread panicked")[i] = Some(o);
                }
            });
        }
    });
    outcomes.into_inner().expect("a run thread panicked").into_iter().map(|o| o.unwrap_or(Outcome::Interrupted)).collect()
}

/// The units a sweep trains: the runs of one estimator together, at most `batch` in each (and
/// each run alone where the experiment does not batch).
fn units<A: SweepExperiment>(todo: &[Planned<A>], batch: usize) -> Vec<Vec<usize>> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, p) in todo.iter().enumerate() {
        match groups.iter_mut().find(|(e, g)| *e == p.spec.estimator && g.len() < batch) {
            Some((_, g)) => g.push(i),
            None => groups.push((p.spec.estimator.clone(), vec![i])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Trains the runs `unit` of `todo`, as one batch where there are several, and evaluates each
/// that finished, unless a signal came first.
fn attempt_unit<A: SweepExperiment, B: Backend + Sync>(
    be: &B,
    todo: &[Planned<A>],
    unit: &[usize],
    data: &Mnist,
    test: &Split,
    k: usize,
) -> Vec<(usize, Outcome)> {
    if unit.len() == 1 || interrupt::requested() {
        return unit.iter().map(|&i| (i, attempt(be, &todo[i], data, test, k))).collect();
    }
    let mut ready = Vec::new();
    let mut out = Vec::new();
    for &i in unit {
        match prepare(&todo[i]) {
            Ok(()) => ready.push(i),
            Err(e) => out.push((i, outcome(&todo[i], Err(e)))),
        }
    }
    if ready.is_empty() {
        return out;
    }
    let args: Vec<A> = ready.iter().map(|&i| todo[i].args.clone()).collect();
    let labels: Vec<String> = ready.iter().map(|&i| todo[i].spec.name.clone()).collect();
    if ready.len() > 1 {
        eprintln!("hnca sweep: {}: trained as one batch", labels.join(", "));
    }
    for (&i, r) in ready.iter().zip(A::train_batch(&args, be, data, &labels)) {
        out.push((i, outcome(&todo[i], r.and_then(|()| finish(be, &todo[i], test, k)))));
    }
    out
}

/// Trains one run and evaluates it, unless a signal came first.
fn attempt<A: SweepExperiment, B: Backend>(be: &B, p: &Planned<A>, data: &Mnist, test: &Split, k: usize) -> Outcome {
    if interrupt::requested() {
        return Outcome::Interrupted;
    }
    let result = prepare(p).and_then(|()| p.args.train(be, data, &p.spec.name)).and_then(|()| finish(be, p, test, k));
    outcome(p, result)
}

/// How a run that ended with `result` ended; a diverged run's record is written here.
fn outcome<A: SweepExperiment>(p: &Planned<A>, result: Result<(), Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Finished,
        Err(Error::Diverged { step, what, kept }) => {
            let record = serde_json::json!({
                "experiment": A::description().name, "run": p.spec.name, "estimator": p.spec.estimator, "seed": p.spec.seed,
                "step": step, "what": what, "kept": kept.trim_end_matches("; "),
            });
            match write_atomically(&p.files.diverged, (record.to_string() + "\n").as_bytes()) {
                Ok(()) => Outcome::Diverged { step, what },
                Err(e) => Outcome::Failed(format!("diverged at step {step} ({what}), and {e}")),
            }
        }
        Err(Error::Interrupted(why)) => {
            if !why.is_empty() {
                eprintln!("hnca sweep: {}: {why}", p.spec.name);
            }
            Outcome::Interrupted
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Readies a run's directory before it trains.
fn prepare<A: SweepExperiment>(p: &Planned<A>) -> Result<(), Error> {
    let dir = &p.files.dir;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    // An evaluation of fewer steps (a sweep extended with more) no longer describes the run.
    match std::fs::remove_file(&p.files.eval) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::Io { path: p.files.eval.clone(), source: e }),
        _ => {}
    }
    let how = if p.files.checkpoint.exists() { "continuing from its checkpoint" } else { "starting" };
    eprintln!("hnca sweep: {}: {how}", p.spec.name);
    Ok(())
}

/// Evaluates a run that trained to its end into eval.json.
fn finish<A: SweepExperiment, B: Backend>(be: &B, p: &Planned<A>, test: &Split, k: usize) -> Result<(), Error> {
    if interrupt::requested() {
        // Trained to the end but not evaluated: the next sweep evaluates it.
        return Err(Error::Interrupted(String::new()));
    }
    let started = Instant::now();
    let ev = p.args.final_eval(be, &p.files.checkpoint, test, &EvalSettings { k, seed: p.spec.seed })?;
    let results: Vec<serde_json::Value> =
        ev.results.iter().map(|r| serde_json::json!({ "key": r.key, "title": r.title, "mean": r.mean, "std_err": r.std_err })).collect();
    let mut out = serde_json::Map::new();
    out.insert("experiment".into(), A::description().name.into());
    out.insert("run".into(), p.spec.name.clone().into());
    out.insert("estimator".into(), p.spec.estimator.clone().into());
    out.insert("seed".into(), p.spec.seed.into());
    out.insert("step".into(), ev.step.into());
    out.insert("seconds".into(), started.elapsed().as_secs_f64().into());
    out.insert("results".into(), results.into());
    out.extend(ev.extra);
    write_atomically(&p.files.eval, (serde_json::Value::Object(out).to_string() + "\n").as_bytes())?;
    let shown: Vec<String> = ev.results.iter().map(|r| format!("{} {:.4} ± {:.4}", r.title, r.mean, r.std_err)).collect();
    eprintln!("hnca sweep: {}: finished at step {}: {}", p.spec.name, ev.step, shown.join(", "));
    Ok(())
}

/// The first `n` images of `split` (all without `n`).
fn first_images(split: &Split, n: Option<usize>) -> Split {
    let n = n.unwrap_or(split.n).min(split.n);
    Split { images: split.images[..n * split.pixels()].to_vec(), labels: split.labels[..n].to_vec(), n, rows: split.rows, cols: split.cols }
}

/// One line per run that did not finish, and the error that ends the command: interrupted
/// (exit status 75) before failed (1); diverged runs are results, not failures.
fn summarise<A>(todo: &[Planned<A>], outcomes: &[Outcome]) -> Result<(), Error> {
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let finished = count(|o| matches!(o, Outcome::Finished));
    let diverged = count(|o| matches!(o, Outcome::Diverged { .. }));
    let stopped = count(|o| matches!(o, Outcome::Interrupted));
    let mut failed = Vec::new();
    for (p, o) in todo.iter().zip(outcomes) {
        match o {
            Outcome::Diverged { step, what } => {
                eprintln!("hnca sweep: {}: diverged at step {step}: {what}; its last good checkpoint is kept", p.spec.name)
            }
            Outcome::Failed(why) => failed.push(format!("{}: {why}", p.spec.name)),
            _ => {}
        }
    }
    eprintln!(
        "hnca sweep: {} runs trained here: {finished} finished, {diverged} diverged, {} failed, {stopped} stopped",
        todo.len(),
        failed.len()
    );
    if stopped > 0 {
        return Err(Error::Interrupted(format!(
            "stopped by {}: {stopped} run{} saved a checkpoint or had not started; the same command continues them",
            interrupt::signal_name(),
            if stopped == 1 { "" } else { "s" }
        )));
    }
    if !failed.is_empty() {
        return Err(Error::Sweep(format!(
            "{} run{} failed: {}",
            failed.len(),
            if failed.len() == 1 { "" } else { "s" },
            failed.join("; ")
        )));
    }
    Ok(())
}
