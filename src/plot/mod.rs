//! `hnca plot`: the paper's figures from metrics files. Left, the training objective (train ELBO
//! of the VAE, or train accuracy of the bandit) against steps; right, the gradient variance on a
//! log axis. One colour per estimator; the mean across its runs (seeds) as a line, their spread
//! as a translucent band. The figure is laid out once as primitives ([`figure`]) and rendered
//! as SVG ([`svg`]) or PNG ([`raster`], [`crate::png`]).

pub mod axis;
pub mod data;
pub mod figure;
pub mod font;
pub mod raster;
pub mod svg;

use std::path::PathBuf;

pub use data::{Experiment, Series};
pub use figure::{Figure, Rgb, PALETTE};

use crate::error::Error;
use crate::png::{encode_png, PngColor};

/// What the band around each estimator's mean shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Spread {
    /// From the smallest to the largest value across seeds.
    Minmax,
    /// Mean ± one standard deviation across seeds (on the log axis, a low end at or below 0
    /// becomes the smallest value).
    Std,
}

/// What the horizontal axis measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XAxis {
    /// Training steps (updates).
    Steps,
    /// ELBO evaluations per example so far: steps times the chains each step samples (the
    /// metrics' `evaluations`), for comparisons at equal cost.
    Evaluations,
    /// Wall time so far (the metrics lines' `seconds`, summed).
    Seconds,
}

impl XAxis {
    pub fn name(self) -> &'static str {
        match self {
            XAxis::Steps => "steps",
            XAxis::Evaluations => "evaluations",
            XAxis::Seconds => "seconds",
        }
    }
    fn title(self) -> &'static str {
        match self {
            XAxis::Steps => "steps",
            XAxis::Evaluations => "ELBO evaluations per example",
            XAxis::Seconds => "seconds",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct PlotArgs {
    /// Metrics files written by `hnca vae --metrics` or `hnca bandit --metrics` (one run each).
    #[arg(required = true, value_name = "RUN.jsonl")]
    pub runs: Vec<PathBuf>,

    /// Output file; .svg or .png by its extension.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Title over the figure (default: the experiment, and the model where all runs share it).
    #[arg(long)]
    pub title: Option<String>,

    /// Width of the figure in pixels.
    #[arg(long, default_value_t = 1200)]
    pub width: u32,

    /// Height of the figure in pixels.
    #[arg(long, default_value_t = 480)]
    pub height: u32,

    /// The band around each estimator's mean.
    #[arg(long, value_enum, default_value_t = Spread::Minmax)]
    pub spread: Spread,

    /// The horizontal axis: steps, ELBO evaluations (equal-cost comparisons of estimators that
    /// sample a layer several times), or wall time.
    #[arg(long, value_enum, default_value_t = XAxis::Steps)]
    pub x: XAxis,
}

impl PlotArgs {
    /// The command's defaults for these runs and output file.
    pub fn new(runs: Vec<PathBuf>, out: PathBuf) -> Self {
        PlotArgs { runs, out, title: None, width: 1200, height: 480, spread: Spread::Minmax, x: XAxis::Steps }
    }
}

/// The output format, by the file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Svg,
    Png,
}

fn format_of(out: &std::path::Path) -> Result<Format, Error> {
    match out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("svg") => Ok(Format::Svg),
        Some("png") => Ok(Format::Png),
        _ => Err(Error::Config(format!("--out {}: unknown image format; name the file .svg or .png", out.display()))),
    }
}

/// Lays out the figure for `series` (from [`data::group`]) of `experiment`, against steps.
pub fn figure(experiment: Experiment, series: &[Series], title: &str, width: u32, height: u32) -> Figure {
    figure_on(experiment, series, title, width, height, XAxis::Steps)
}

/// Lays out the figure for `series` (from [`data::group_on`]) of `experiment` against `axis`.
pub fn figure_on(experiment: Experiment, series: &[Series], title: &str, width: u32, height: u32, axis: XAxis) -> Figure {
    let color = |i: usize| PALETTE[i % PALETTE.len()];
    let legend: Vec<figure::LegendEntry> = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let seeds = if s.runs == 1 { "1 seed".to_string() } else { format!("{} seeds", s.runs) };
            figure::LegendEntry { label: format!("{} ({seeds})", s.estimator), color: color(i) }
        })
        .collect();
    let panels = [
        figure::Panel {
            y_title: experiment.metric_title,
            log: false,
            bands: series.iter().enumerate().map(|(i, s)| (color(i), &s.metric)).collect(),
        },
        figure::Panel {
            y_title: "gradient variance",
            log: true,
            bands: series.iter().enumerate().map(|(i, s)| (color(i), &s.grad_var)).collect(),
        },
    ];
    figure::build(width, height, title, &legend, axis.title(), &panels)
}

/// Runs `hnca plot`: reads the runs, lays out the figure and writes it as SVG or PNG.
pub fn run(args: &PlotArgs, experiments: &[Experiment]) -> Result<(), Error> {
    println!("{}", draw(args, experiments)?);
    Ok(())
}

/// Draws the figure `args` asks for; says what it drew ("FILE: 4 runs, 2 estimators").
pub fn draw(args: &PlotArgs, experiments: &[Experiment]) -> Result<String, Error> {
    let format = format_of(&args.out)?;
    if !(480..=10_000).contains(&args.width) || !(240..=10_000).contains(&args.height) {
        return Err(Error::Config(format!(
            "--width {} --height {}: the figure must be 480 to 10000 pixels wide and 240 to 10000 high",
            args.width, args.height
        )));
    }
    let runs = args.runs.iter().map(|p| data::load_run(p, experiments)).collect::<Result<Vec<_>, _>>()?;
    let experiment = data::common_experiment(&runs)?;
    let series = data::group_on(&runs, args.spread, args.x)?;
    let title = args.title.clone().unwrap_or_else(|| {
        let setup = runs[0].setup.as_ref().filter(|s| runs.iter().all(|r| r.setup.as_ref() == Some(*s)));
        match setup {
            Some(s) => format!("{} ({s})", experiment.figure_title),
            None => experiment.figure_title.to_string(),
        }
    });
    let fig = figure_on(experiment, &series, &title, args.width, args.height, args.x);
    let bytes = match format {
        Format::Svg => svg::render(&fig).into_bytes(),
        Format::Png => encode_png(fig.width, fig.height, PngColor::Rgb8, &raster::render(&fig)),
    };
    crate::run::files::write_atomically(&args.out, &bytes)?;
    let plural = |n: usize, what: &str| if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") };
    Ok(format!("{}: {}, {}", args.out.display(), plural(runs.len(), "run"), plural(series.len(), "estimator")))
}
