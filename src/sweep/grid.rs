//! A sweep's grid: which runs it holds (every estimator with every seed, in that order), their
//! names and files, how they are cut into tasks, and where each run got to on disk.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// At most this many seeds in one sweep.
const MAX_SEEDS: usize = 10_000;

/// Parses a list of seeds: numbers and inclusive ranges, comma-separated ("0-4", "0,2,7-9").
pub fn parse_seeds(spec: &str) -> Result<Vec<u64>, Error> {
    let bad = |why: String| Error::Config(format!("--seeds {}: {why}", crate::error::quoted(spec)));
    let number = |s: &str| {
        s.trim().parse::<u64>().map_err(|_| bad(format!("{} is not a seed (a whole number from 0)", crate::error::quoted(s.trim()))))
    };
    let mut seeds = Vec::new();
    for part in spec.split(',') {
        if part.trim().is_empty() {
            return Err(bad("an empty item; write numbers and ranges like 0-4, separated by commas".into()));
        }
        let (from, to) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(part)?;
                (n, n)
            }
        };
        if from > to {
            return Err(bad(format!("the range {from}-{to} runs backwards; write {to}-{from}")));
        }
        if to - from >= MAX_SEEDS as u64 || seeds.len() + (to - from) as usize >= MAX_SEEDS {
            return Err(bad(format!("more than {MAX_SEEDS} seeds")));
        }
        for s in from..=to {
            if seeds.contains(&s) {
                return Err(bad(format!("seed {s} is listed twice")));
            }
            seeds.push(s);
        }
    }
    Ok(seeds)
}

/// Checks every name of `--estimators` with the experiment's `check` (what its `--estimator`
/// accepts, with the options its metrics name).
pub fn check_estimators(experiment: &str, given: &[String], check: impl Fn(&str) -> Result<(), String>) -> Result<(), Error> {
    if given.is_empty() {
        return Err(Error::Config("--estimators needs at least one estimator".into()));
    }
    for (i, e) in given.iter().enumerate() {
        if let Err(why) = check(e) {
            return Err(Error::Config(format!("--estimators: unknown estimator {} for {experiment}; {why}", crate::error::quoted(e))));
        }
        if given[..i].contains(e) {
            return Err(Error::Config(format!("--estimators: {e} is listed twice")));
        }
    }
    Ok(())
}

/// OUT/sweep.json: the estimators of the sweeps run into OUT, per experiment, in the order
/// their --estimators gave them; `hnca report` lists them in that order.
pub const MANIFEST: &str = "sweep.json";

/// Adds `estimators` (of `experiment`) to OUT/sweep.json, after those already there.
pub fn record_estimators(out: &Path, experiment: &str, estimators: &[String]) -> Result<(), Error> {
    let path = out.join(MANIFEST);
    let mut manifest = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                return Err(Error::Config(format!(
                    "{}: not a sweep's manifest (a JSON object); remove it or choose another --out",
                    path.display()
                )))
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(source) => return Err(Error::Io { path, source }),
    };
    let list = manifest.entry(experiment).or_insert_with(|| serde_json::json!({ "estimators": [] }));
    let known = list.get_mut("estimators").and_then(|e| e.as_array_mut());
    let Some(known) = known else {
        return Err(Error::Config(format!("{}: no \"estimators\" list for {experiment}", path.display())));
    };
    let before = known.len();
    for e in estimators {
        if !known.iter().any(|k| k.as_str() == Some(e)) {
            known.push(e.clone().into());
        }
    }
    if known.len() != before || before == 0 {
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(manifest)).expect("JSON values serialise") + "\n";
        crate::run::files::write_atomically(&path, text.as_bytes())?;
    }
    Ok(())
}

/// The estimators OUT/sweep.json lists for `experiment`, in order (none if there is no manifest).
pub fn recorded_estimators(out: &Path, experiment: &str) -> Vec<String> {
    let read = || -> Option<Vec<String>> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join(MANIFEST)).ok()?).ok()?;
        Some(v.get(experiment)?.get("estimators")?.as_array()?.iter().filter_map(|e| e.as_str().map(str::to_string)).collect())
    };
    read().unwrap_or_default()
}

/// One run of the grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSpec {
    pub estimator: String,
    pub seed: u64,
    /// "<experiment>-<estimator>-s<seed>", the name of its directory.
    pub name: String,
}

/// The files a run of a sweep writes, in its own directory.
#[derive(Clone, Debug)]
pub struct RunFiles {
    pub dir: PathBuf,
    /// The metrics, as JSON lines (what `--metrics` writes).
    pub metrics: PathBuf,
    /// The checkpoint (what `--save` writes), written every --save-every epochs, at the end and
    /// when a signal stops the run.
    pub checkpoint: PathBuf,
    /// The final evaluation; its presence marks the run finished.
    pub eval: PathBuf,
    /// Written instead of `eval` when the run diverged.
    pub diverged: PathBuf,
}

impl RunFiles {
    pub fn new(out: &Path, name: &str) -> Self {
        let dir = out.join(name);
        RunFiles {
            metrics: dir.join("metrics.jsonl"),
            checkpoint: dir.join("checkpoint.ck"),
            eval: dir.join("eval.json"),
            diverged: dir.join("diverged.json"),
            dir,
        }
    }
}

/// Every estimator with every seed, estimators outermost.
pub fn runs(experiment: &str, estimators: &[String], seeds: &[u64]) -> Vec<RunSpec> {
    estimators
        .iter()
        .flat_map(|e| seeds.iter().map(move |&s| RunSpec { estimator: e.clone(), seed: s, name: format!("{experiment}-{e}-s{s}") }))
        .collect()
}

/// How many tasks of `per_task` runs hold `runs` runs.
pub fn task_count(runs: usize, per_task: usize) -> usize {
    runs.div_ceil(per_task)
}

/// The runs of task `task`: runs task·per_task .. (task+1)·per_task of the grid.
pub fn task_runs(all: &[RunSpec], per_task: usize, task: usize) -> Result<&[RunSpec], Error> {
    let tasks = task_count(all.len(), per_task);
    if task >= tasks {
        return Err(Error::Config(format!(
            "--task {task}: this sweep has {tasks} task{} (0 to {}) of {per_task} run{} each",
            if tasks == 1 { "" } else { "s" },
            tasks - 1,
            if per_task == 1 { "" } else { "s" }
        )));
    }
    Ok(&all[task * per_task..((task + 1) * per_task).min(all.len())])
}

/// Where a run of the sweep got to, from its files.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// Nothing written yet.
    New,
    /// A checkpoint to continue from.
    Started,
    /// Evaluated after `total_steps`: nothing left to do.
    Finished,
    /// It diverged, at this step; a sweep leaves it be until its diverged.json is removed.
    Diverged(u64),
}

/// A run's status, where a finished run is one whose eval.json was written at `total_steps` or
/// later (a sweep given more steps continues it).
pub fn status(files: &RunFiles, total_steps: u64) -> Status {
    let json = |p: &Path| std::fs::read(p).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    if let Some(d) = json(&files.diverged) {
        return Status::Diverged(d.get("step").and_then(|s| s.as_u64()).unwrap_or(0));
    }
    if json(&files.eval).is_some_and(|e| e.get("step").and_then(|s| s.as_u64()).is_some_and(|s| s >= total_steps)) {
        return Status::Finished;
    }
    if files.checkpoint.exists() {
        Status::Started
    } else {
        Status::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_numbers_and_ranges() {
        assert_eq!(parse_seeds("0-4").unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(parse_seeds("7").unwrap(), vec![7]);
        assert_eq!(parse_seeds("0, 2,5-6").unwrap(), vec![0, 2, 5, 6]);
        for bad in ["", "4-0", "a", "1,,2", "1-", "-3", "0-2,2", "0-99999", "1.5"] {
            let e = parse_seeds(bad).unwrap_err().to_string();
            assert!(e.starts_with("--seeds ") && !e.contains('\n'), "{bad}: {e}");
        }
        assert!(parse_seeds("4-0").unwrap_err().to_string().contains("write 0-4"));
    }

    #[test]
    fn the_grid_is_estimators_by_seeds_cut_into_tasks() {
        let runs = runs("vae", &["hnca".into(), "loo".into()], &[0, 1, 2]);
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["vae-hnca-s0", "vae-hnca-s1", "vae-hnca-s2", "vae-loo-s0", "vae-loo-s1", "vae-loo-s2"]);
        assert_eq!(task_count(6, 4), 2);
        assert_eq!(task_runs(&runs, 4, 1).unwrap(), &runs[4..]);
        let e = task_runs(&runs, 4, 2).unwrap_err().to_string();
        assert_eq!(e, "--task 2: this sweep has 2 tasks (0 to 1) of 4 runs each");
    }

    #[test]
    fn unknown_and_repeated_estimators_are_named() {
        let known = |e: &str| if e == "hnca" || e == "loo" { Ok(()) } else { Err("choose from hnca, loo".to_string()) };
        check_estimators("vae", &["hnca".into()], known).unwrap();
        let e = check_estimators("vae", &["hnca".into(), "lol".into()], known).unwrap_err().to_string();
        assert_eq!(e, "--estimators: unknown estimator \"lol\" for vae; choose from hnca, loo");
        assert!(check_estimators("vae", &["loo".into(), "loo".into()], known).is_err());
    }
}
