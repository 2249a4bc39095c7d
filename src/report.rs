//! `hnca report DIR`: the table a paper prints of a sweep, from its run directories' files, and
//! optionally its figures. Per experiment and estimator: how many runs finished, diverged or
//! are unfinished; then over the finished runs (seeds) the mean ± standard error of the final
//! training objective, of every number of their evaluations (eval.json), of the gradient
//! variance (averaged over each run's steps), of the step rate and of the wall time. Knows no
//! experiment: their names and metric fields come from the registered descriptions, and the
//! estimators' order from the sweeps' manifest (OUT/sweep.json).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::error::Error;
use crate::run::Description;

#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// A sweep's directory (its --out): every directory in it holding a run's metrics.jsonl
    /// (or diverged.json) is one run.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Print the table as one JSON object instead of Markdown.
    #[arg(long)]
    pub json: bool,

    /// Also draw each experiment's figure (as `hnca plot` does, from every run's metrics) into
    /// this directory, as <experiment>.svg and <experiment>.png.
    #[arg(long, value_name = "DIR")]
    pub figures: Option<PathBuf>,
}

/// (key, title, mean) of one result in a run's eval.json.
type EvalResult = (String, String, f64);
/// An estimator's label and its runs (one per seed).
type EstimatorRuns<'a> = (String, Vec<&'a RunFacts>);

/// One run, as its files tell.
#[derive(Debug)]
struct RunFacts {
    experiment: &'static Description,
    estimator: String,
    metrics: Option<PathBuf>,
    /// The last epoch's training objective.
    train: Option<f64>,
    /// Gradient variance averaged over the run's steps.
    grad_var: Option<f64>,
    steps: u64,
    /// ELBO (or agent) evaluations per step, from the metrics (issue 16's equal-cost measure).
    evaluations: Option<f64>,
    train_seconds: f64,
    /// (key, title, mean) of each result of eval.json, and its seconds.
    eval: Option<(Vec<EvalResult>, f64)>,
    /// The model's setup from the first metrics line (features, layers, batch), for the title.
    setup: Option<String>,
    diverged: bool,
}

fn read_json(path: &Path) -> Result<Option<Value>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Config(format!("{}: not JSON: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { path: path.to_path_buf(), source }),
    }
}

fn experiment_named(name: Option<&str>, whence: &Path) -> Result<&'static Description, Error> {
    let name = name.ok_or_else(|| Error::Config(format!("{}: no \"experiment\"", whence.display())))?;
    crate::run::known()
        .iter()
        .copied()
        .find(|d| d.name == name)
        .ok_or_else(|| Error::Config(format!("{}: unknown experiment {}", whence.display(), crate::error::quoted(name))))
}

/// The run in `dir`, or `None` if it holds no run's files.
fn read_run(dir: &Path) -> Result<Option<RunFacts>, Error> {
    let metrics_path = dir.join("metrics.jsonl");
    let diverged = read_json(&dir.join("diverged.json"))?;
    let eval = read_json(&dir.join("eval.json"))?;
    let text = match std::fs::read_to_string(&metrics_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(Error::Io { path: metrics_path, source }),
    };
    let lines: Vec<Map<String, Value>> = match &text {
        Some(t) => t
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| match serde_json::from_str(l) {
                Ok(Value::Object(o)) => Ok(o),
                _ => Err(Error::Config(format!("{} line {}: not a JSON object", metrics_path.display(), i + 1))),
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let Some(first) = lines.first().or(diverged.as_ref().and_then(Value::as_object)) else { return Ok(None) };
    let experiment = experiment_named(first.get("experiment").and_then(Value::as_str), dir)?;
    let estimator = first.get("estimator").and_then(Value::as_str).unwrap_or("?").to_string();
    let num = |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_f64);
    let (mut weighted, mut steps_in, mut seconds) = (0.0, 0.0, 0.0);
    for (i, l) in lines.iter().enumerate() {
        // A run resumed mid-epoch (stopped by --steps) writes a line for the part before the
        // stop and, at the epoch's end, one for the whole epoch so far (the checkpoint carried
        // the part's sums): only an epoch's last line enters the mean over steps, while every
        // line's seconds count, since each covers its own process's time.
        let epoch = |l: &Map<String, Value>| l.get("epoch").and_then(Value::as_u64);
        if lines.get(i + 1).is_none_or(|next| epoch(next) != epoch(l)) {
            let n = num(l, "steps_in_epoch").unwrap_or(0.0);
            weighted += num(l, "grad_var").unwrap_or(0.0) * n;
            steps_in += n;
        }
        seconds += num(l, "seconds").unwrap_or(0.0);
    }
    let last = lines.last();
    let eval = eval.map(|e| {
        let results = e.get("results").and_then(Value::as_array).cloned().unwrap_or_default();
        let results = results
            .iter()
            .filter_map(|r| Some((r.get("key")?.as_str()?.to_string(), r.get("title")?.as_str()?.to_string(), r.get("mean")?.as_f64()?)))
            .collect();
        (results, e.get("seconds").and_then(Value::as_f64).unwrap_or(0.0))
    });
    Ok(Some(RunFacts {
        experiment,
        estimator,
        metrics: text.is_some().then_some(metrics_path),
        train: last.and_then(|l| num(l, experiment.train_metric)),
        grad_var: (steps_in > 0.0).then(|| weighted / steps_in),
        steps: last.and_then(|l| l.get("step")).and_then(Value::as_u64).unwrap_or(0),
        evaluations: last.and_then(|l| num(l, "evaluations")),
        train_seconds: seconds,
        eval,
        setup: lines.first().and_then(crate::plot::data::setup),
        diverged: diverged.is_some(),
    }))
}

/// Mean and standard error (sample standard deviation / √n; none for one value) of `xs`.
fn mean_se(xs: &[f64]) -> Option<(f64, Option<f64>)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let se = (xs.len() > 1).then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt());
    Some((mean, se))
}

/// One column of the table: its key, title, how its numbers are written, and per estimator the
/// finished runs' values.
struct Column {
    key: String,
    title: String,
    show: fn(f64, usize) -> String,
}

fn fixed(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}
fn sci(v: f64, _: usize) -> String {
    format!("{v:.3e}")
}
fn rate(v: f64, _: usize) -> String {
    format!("{v:.1}")
}
fn duration(s: f64, _: usize) -> String {
    match s {
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.1} min", s / 60.0),
        s => format!("{:.2} h", s / 3600.0),
    }
}

/// The value of `key` for a finished run.
fn value(r: &RunFacts, key: &str) -> Option<f64> {
    let (results, eval_seconds) = r.eval.as_ref()?;
    match key {
        "train" => r.train,
        "grad_var" => r.grad_var,
        "evaluations" => r.evaluations,
        "steps_per_second" => (r.train_seconds > 0.0).then(|| r.steps as f64 / r.train_seconds),
        "wall_seconds" => Some(r.train_seconds + eval_seconds),
        k => results.iter().find(|x| x.0 == k).map(|x| x.2),
    }
}

/// `hnca report`.
pub fn run(args: &ReportArgs) -> Result<(), Error> {
    let entries = std::fs::read_dir(&args.dir).map_err(|source| Error::Io { path: args.dir.clone(), source })?;
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    dirs.sort();
    let mut runs = Vec::new();
    for d in &dirs {
        runs.extend(read_run(d)?);
    }
    if runs.is_empty() {
        return Err(Error::Config(format!("{}: no runs (no directory in it holds a metrics.jsonl)", args.dir.display())));
    }
    // Experiments and estimators in the order their runs' directories sort, at first.
    let mut groups: Vec<(&'static Description, Vec<EstimatorRuns>)> = Vec::new();
    for r in &runs {
        let at = match groups.iter().position(|g| g.0.name == r.experiment.name) {
            Some(i) => i,
            None => {
                groups.push((r.experiment, Vec::new()));
                groups.len() - 1
            }
        };
        let ests = &mut groups[at].1;
        match ests.iter_mut().find(|e| e.0 == r.estimator) {
            Some(e) => e.1.push(r),
            None => ests.push((r.estimator.clone(), vec![r])),
        }
    }
    // In the order the sweeps' --estimators gave them (an ablation's "hnca+all-child" after its
    // estimator's place), the rest after them in the order their directories sort.
    for (d, ests) in groups.iter_mut() {
        let order = crate::sweep::grid::recorded_estimators(&args.dir, d.name);
        let place = |label: &str| {
            let base = label.split('+').next().unwrap_or(label);
            order.iter().position(|e| e == label).or_else(|| order.iter().position(|e| e == base)).unwrap_or(usize::MAX)
        };
        ests.sort_by_key(|e| place(&e.0));
    }
    let mut out_json = Vec::new();
    for (d, ests) in &groups {
        let mut cols = vec![Column { key: "train".into(), title: d.metric_title.into(), show: fixed }];
        let mut seen = BTreeMap::new();
        for r in ests.iter().flat_map(|e| e.1.iter()) {
            for (key, title, _) in r.eval.iter().flat_map(|e| e.0.iter()) {
                if seen.insert(key.clone(), ()).is_none() {
                    cols.push(Column { key: key.clone(), title: title.clone(), show: fixed });
                }
            }
        }
        cols.push(Column { key: "grad_var".into(), title: "gradient variance".into(), show: sci });
        if ests.iter().flat_map(|e| e.1.iter()).any(|r| r.evaluations.is_some_and(|v| v != 1.0)) {
            // Only where estimators differ in cost: the chains each step samples.
            cols.push(Column { key: "evaluations".into(), title: "evaluations/step".into(), show: rate });
        }
        cols.push(Column { key: "steps_per_second".into(), title: "steps/s".into(), show: rate });
        cols.push(Column { key: "wall_seconds".into(), title: "wall time".into(), show: duration });
        let digits = d.line_digits;
        let mut rows = Vec::new();
        let mut json_rows = Vec::new();
        for (est, rs) in ests {
            let finished = rs.iter().filter(|r| r.eval.is_some()).count();
            let diverged = rs.iter().filter(|r| r.diverged).count();
            let mut cells = vec![est.clone(), runs_cell(rs.len(), finished, diverged)];
            let mut obj = Map::new();
            obj.insert("estimator".into(), est.clone().into());
            obj.insert("runs".into(), rs.len().into());
            obj.insert("finished".into(), finished.into());
            obj.insert("diverged".into(), diverged.into());
            for c in &cols {
                let xs: Vec<f64> = rs.iter().filter_map(|r| value(r, &c.key)).collect();
                let key = if c.key == "train" { d.train_metric.to_string() } else { c.key.clone() };
                match mean_se(&xs) {
                    Some((m, se)) => {
                        let se_text = se.map_or(String::new(), |s| format!(" ± {}", (c.show)(s, digits)));
                        cells.push(format!("{}{se_text}", (c.show)(m, digits)));
                        obj.insert(key, json!({ "mean": m, "std_err": se, "n": xs.len() }));
                    }
                    None => {
                        cells.push("—".into());
                        obj.insert(key, Value::Null);
                    }
                }
            }
            rows.push(cells);
            json_rows.push(Value::Object(obj));
        }
        out_json.push(json!({ "experiment": d.name, "estimators": json_rows }));
        if !args.json {
            let mut header = vec!["estimator".to_string(), "runs".into()];
            header.extend(cols.iter().map(|c| c.title.clone()));
            // The setup in the title where every run of the experiment shares it, as in the figures.
            let mut setups = ests.iter().flat_map(|e| e.1.iter()).map(|r| r.setup.as_deref());
            let first = setups.next().flatten();
            let setup = first.filter(|s| setups.all(|o| o == Some(*s)));
            print_markdown(d, setup, &header, &rows);
        }
    }
    if args.json {
        println!("{}", json!({ "dir": args.dir.display().to_string(), "experiments": out_json }));
    }
    if let Some(fig_dir) = &args.figures {
        std::fs::create_dir_all(fig_dir).map_err(|source| Error::Io { path: fig_dir.clone(), source })?;
        for (d, ests) in &groups {
            let files: Vec<PathBuf> = ests.iter().flat_map(|e| e.1.iter()).filter_map(|r| r.metrics.clone()).collect();
            if files.is_empty() {
                continue;
            }
            for ext in ["svg", "png"] {
                let plot = crate::plot::PlotArgs::new(files.clone(), fig_dir.join(format!("{}.{ext}", d.name)));
                eprintln!("{}", crate::plot::draw(&plot, crate::run::known())?);
            }
        }
    }
    Ok(())
}

fn runs_cell(total: usize, finished: usize, diverged: usize) -> String {
    let mut s = if finished == total { total.to_string() } else { format!("{finished} of {total}") };
    if diverged > 0 {
        s += &format!(" ({diverged} diverged)");
    }
    s
}

fn print_markdown(d: &Description, setup: Option<&str>, header: &[String], rows: &[Vec<String>]) {
    match setup {
        Some(s) => println!("## {} ({s})\n", d.figure_title),
        None => println!("## {}\n", d.figure_title),
    }
    println!("| {} |", header.join(" | "));
    println!("|{}|", header.iter().enumerate().map(|(i, _)| if i < 2 { "---" } else { "---:" }).collect::<Vec<_>>().join("|"));
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
    println!("\nMean ± standard error over the finished runs (seeds); the training objective is the last epoch's mean, the gradient variance the mean over each run's steps.\n");
}
