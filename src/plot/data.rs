//! Reading metrics files (one run each) and summarising the runs of each estimator across seeds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{Spread, XAxis};
use crate::error::Error;
use crate::run::Description;

/// Which experiment wrote a metrics file: one of the descriptions `plot` is given (the
/// program's [`crate::app::EXPERIMENTS`]); the metrics files name it in their "experiment" field.
pub type Experiment = &'static Description;

/// The experiment named by a metrics line's "experiment" field. A line without one comes from
/// before lines named their experiment, when the first of `known` (the VAE) was the only one.
fn experiment_of(field: Option<&Value>, known: &[Experiment]) -> Result<Experiment, String> {
    let found = match field {
        None => known.first().copied(),
        Some(Value::String(s)) => known.iter().find(|d| d.name == s).copied(),
        Some(_) => None,
    };
    found.ok_or_else(|| {
        let names: Vec<String> = known.iter().map(|d| format!("\"{}\"", d.name)).collect();
        format!("unknown \"experiment\" {} (expected {})", field.map_or("(none)".into(), |v| v.to_string()), names.join(" or "))
    })
}

fn same(a: Experiment, b: Experiment) -> bool {
    a.name == b.name
}

/// One metrics file.
#[derive(Clone, Debug)]
pub struct Run {
    pub path: PathBuf,
    pub experiment: Experiment,
    pub estimator: String,
    /// "layers 200,200,200, batch 50" (after "conv features, " where the line names its
    /// features), from the first line, where it has both.
    pub setup: Option<String>,
    /// Step → (the left panel's metric, grad_var). Where a resumed run repeats a step, the
    /// last line wins.
    pub points: BTreeMap<u64, (f64, f64)>,
    /// Step → (ELBO evaluations per example per step, the line's wall time), where the line has
    /// them: what `--x evaluations` and `--x seconds` draw against.
    pub cost: BTreeMap<u64, (Option<f64>, Option<f64>)>,
}

impl Run {
    /// Where each step lies on `axis`: the step; the evaluations so far (step × the run's
    /// evaluations per step); or the wall time so far (the lines' seconds summed in step order).
    /// An error naming the field when a line lacks it.
    pub fn x_values(&self, axis: XAxis) -> Result<BTreeMap<u64, f64>, Error> {
        let missing = |field: &str, step: u64| {
            Error::Config(format!(
                "{}: the line of step {step} has no \"{field}\" to plot --x {} against",
                self.path.display(),
                axis.name()
            ))
        };
        let mut out = BTreeMap::new();
        let mut seconds = 0.0;
        for (&step, &(evals, secs)) in &self.cost {
            let x = match axis {
                XAxis::Steps => step as f64,
                XAxis::Evaluations => step as f64 * evals.ok_or_else(|| missing("evaluations", step))?,
                XAxis::Seconds => {
                    seconds += secs.ok_or_else(|| missing("seconds", step))?;
                    seconds
                }
            };
            out.insert(step, x);
        }
        Ok(out)
    }
}

/// A finite number under `key`, or why not.
fn number(obj: &Map<String, Value>, key: &str) -> Result<f64, String> {
    match obj.get(key) {
        None => Err(format!("no \"{key}\"")),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(format!("\"{key}\" is {v}, not a finite number")),
        },
    }
}

/// The model's setup as a metrics line states it ("conv features, layers 200, batch 50"), for
/// titles.
pub fn setup(obj: &Map<String, Value>) -> Option<String> {
    let layers = obj.get("layers")?.as_array()?.iter().map(|l| l.as_u64().map(|n| n.to_string())).collect::<Option<Vec<_>>>()?;
    let batch = obj.get("batch_size")?.as_u64()?;
    let features = obj.get("features").and_then(Value::as_str).map(|f| format!("{f} features, ")).unwrap_or_default();
    Some(format!("{features}layers {}, batch {batch}", layers.join(",")))
}

/// Reads one metrics file written by `hnca vae --metrics` or `hnca bandit --metrics`.
pub fn load_run(path: &Path, known: &[Experiment]) -> Result<Run, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    let shown = path.display();
    let mut run: Option<Run> = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| Error::Config(format!("{shown} line {}: {msg}", i + 1));
        let v: Value = serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| at("not a JSON object".into()))?;
        let experiment = experiment_of(obj.get("experiment"), known).map_err(at)?;
        let step = obj.get("step").and_then(Value::as_u64).ok_or_else(|| at("no \"step\" (a non-negative integer)".into()))?;
        let estimator = obj.get("estimator").and_then(Value::as_str).ok_or_else(|| at("no \"estimator\" (a string)".into()))?;
        let metric = number(obj, experiment.train_metric).map_err(at)?;
        let grad_var = number(obj, "grad_var").map_err(at)?;
        let optional = |key: &str| if obj.contains_key(key) { number(obj, key).map(Some) } else { Ok(None) };
        let evaluations = optional("evaluations").map_err(at)?;
        let seconds = optional("seconds").map_err(at)?;
        let run = run.get_or_insert_with(|| Run {
            path: path.to_path_buf(),
            experiment,
            estimator: estimator.to_string(),
            setup: setup(obj),
            points: BTreeMap::new(),
            cost: BTreeMap::new(),
        });
        if !same(run.experiment, experiment) {
            return Err(at(format!("a {} line, but the file's first line is a {} run's", experiment.display, run.experiment.display)));
        }
        if run.estimator != estimator {
            return Err(at(format!("estimator \"{estimator}\", but the file's first line has \"{}\"", run.estimator)));
        }
        run.points.insert(step, (metric, grad_var));
        run.cost.insert(step, (evaluations, seconds));
    }
    run.ok_or_else(|| Error::Config(format!("{shown}: empty (no metrics lines)")))
}

/// The experiment all `runs` share, or a usage error naming two that differ.
pub fn common_experiment(runs: &[Run]) -> Result<Experiment, Error> {
    let first = runs.first().ok_or_else(|| Error::Config("no metrics files to plot".into()))?;
    match runs.iter().find(|r| !same(r.experiment, first.experiment)) {
        None => Ok(first.experiment),
        Some(r) => Err(Error::Config(format!(
            "{} is a {} run but {} is a {} run; plot one experiment at a time",
            r.path.display(),
            r.experiment.display,
            first.path.display(),
            first.experiment.display
        ))),
    }
}

/// A curve across seeds: at each x, the mean and the spread's low and high ends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Band {
    pub x: Vec<f64>,
    pub mean: Vec<f64>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

impl Band {
    /// Adds the point at `x` summarising `vals` (one per seed). With `positive` (a log axis), a
    /// low end at or below 0 (mean − std) is replaced by the smallest value.
    fn push(&mut self, x: f64, vals: &[f64], spread: Spread, positive: bool) {
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = match spread {
            Spread::Minmax => (min, max),
            Spread::Std => {
                let var = if vals.len() > 1 { vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
                (mean - var.sqrt(), mean + var.sqrt())
            }
        };
        let lo = if positive && lo <= 0.0 { min } else { lo };
        self.x.push(x);
        self.mean.push(mean);
        self.lo.push(lo.min(mean));
        self.hi.push(hi.max(mean));
    }
}

/// The runs of one estimator, summarised at every step all of them have.
#[derive(Clone, Debug)]
pub struct Series {
    pub estimator: String,
    /// How many runs (seeds).
    pub runs: usize,
    pub metric: Band,
    /// Only steps where every run's grad_var is positive (it goes on a log axis).
    pub grad_var: Band,
}

/// Groups `runs` by estimator, in order of first appearance, against steps.
pub fn group(runs: &[Run], spread: Spread) -> Result<Vec<Series>, Error> {
    group_on(runs, spread, XAxis::Steps)
}

/// Groups `runs` by estimator, in order of first appearance, each step placed on `axis` (for
/// the wall time, the mean over the estimator's runs of their time to that step).
pub fn group_on(runs: &[Run], spread: Spread, axis: XAxis) -> Result<Vec<Series>, Error> {
    let xs = runs.iter().map(|r| r.x_values(axis)).collect::<Result<Vec<_>, _>>()?;
    let mut order: Vec<&str> = Vec::new();
    for r in runs {
        if !order.contains(&r.estimator.as_str()) {
            order.push(&r.estimator);
        }
    }
    order
        .into_iter()
        .map(|est| {
            let members: Vec<&Run> = runs.iter().filter(|r| r.estimator == est).collect();
            let member_xs: Vec<&BTreeMap<u64, f64>> = runs.iter().zip(&xs).filter(|(r, _)| r.estimator == est).map(|(_, x)| x).collect();
            let steps: Vec<u64> = members[0].points.keys().copied().filter(|s| members.iter().all(|r| r.points.contains_key(s))).collect();
            if steps.is_empty() {
                let names: Vec<String> = members.iter().map(|r| r.path.display().to_string()).collect();
                return Err(Error::Config(format!("estimator \"{est}\": its runs {} have no step in common", names.join(", "))));
            }
            let mut series = Series { estimator: est.to_string(), runs: members.len(), metric: Band::default(), grad_var: Band::default() };
            for s in steps {
                let metric: Vec<f64> = members.iter().map(|r| r.points[&s].0).collect();
                let grad_var: Vec<f64> = members.iter().map(|r| r.points[&s].1).collect();
                let x = member_xs.iter().map(|m| m[&s]).sum::<f64>() / member_xs.len() as f64;
                series.metric.push(x, &metric, spread, false);
                if grad_var.iter().all(|&g| g > 0.0) {
                    series.grad_var.push(x, &grad_var, spread, true);
                }
            }
            Ok(series)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(est: &str, points: &[(u64, f64, f64)]) -> Run {
        Run {
            path: PathBuf::from(format!("{est}.jsonl")),
            experiment: &crate::vae::DESCRIPTION,
            estimator: est.into(),
            setup: None,
            points: points.iter().map(|&(s, m, g)| (s, (m, g))).collect(),
            cost: points.iter().map(|&(s, _, _)| (s, (Some(2.0), Some(10.0)))).collect(),
        }
    }

    #[test]
    fn the_setup_names_the_features_where_a_line_has_them() {
        let line =
            |extra: &str| -> Map<String, Value> { serde_json::from_str(&format!(r#"{{"layers":[200],"batch_size":50{extra}}}"#)).unwrap() };
        assert_eq!(setup(&line("")).as_deref(), Some("layers 200, batch 50"));
        assert_eq!(setup(&line(r#","features":"conv""#)).as_deref(), Some("conv features, layers 200, batch 50"));
    }

    #[test]
    fn groups_by_estimator_at_common_steps_with_mean_and_spread() {
        let runs = [
            run("b", &[(1, -10.0, 1.0), (2, -8.0, 0.5), (3, -7.0, 0.25)]),
            run("a", &[(1, -12.0, 2.0)]),
            run("b", &[(1, -14.0, 3.0), (2, -6.0, 0.0)]),
        ];
        let s = group(&runs, Spread::Minmax).unwrap();
        assert_eq!(s.iter().map(|s| (s.estimator.as_str(), s.runs)).collect::<Vec<_>>(), [("b", 2), ("a", 1)]);
        assert_eq!(s[0].metric, Band { x: vec![1.0, 2.0], mean: vec![-12.0, -7.0], lo: vec![-14.0, -8.0], hi: vec![-10.0, -6.0] });
        // grad_var 0 at step 2 cannot go on a log axis.
        assert_eq!(s[0].grad_var.x, [1.0]);
        let std = group(&runs, Spread::Std).unwrap();
        let sd = 8f64.sqrt();
        assert_eq!(std[0].metric.lo[0], -12.0 - sd);
        assert!((std[0].grad_var.lo[0] - (2.0 - 2f64.sqrt())).abs() < 1e-12);
        // On the log axis a mean − std at or below 0 becomes the smallest seed's value.
        let mut band = Band::default();
        band.push(1.0, &[0.1, 10.0], Spread::Std, true);
        assert_eq!(band.lo, [0.1]);
    }

    #[test]
    fn steps_are_placed_at_their_evaluations_or_wall_time() {
        let runs = [run("b", &[(1, -10.0, 1.0), (2, -8.0, 0.5)])];
        let at = |axis| group_on(&runs, Spread::Minmax, axis).unwrap()[0].metric.x.clone();
        assert_eq!(at(XAxis::Steps), [1.0, 2.0]);
        assert_eq!(at(XAxis::Evaluations), [2.0, 4.0]);
        assert_eq!(at(XAxis::Seconds), [10.0, 20.0]);
        let mut bare = runs[0].clone();
        bare.cost.insert(2, (None, Some(1.0)));
        let e = group_on(&[bare], Spread::Minmax, XAxis::Evaluations).unwrap_err().to_string();
        assert!(e.contains("step 2 has no \"evaluations\""), "{e}");
    }
}
