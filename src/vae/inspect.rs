//! `hnca eval` and `hnca sample`: what a trained checkpoint is worth, and what it draws.

use std::path::{Path, PathBuf};

use super::checkpoint::{read_params, VaeRun};
use super::evaluate::{evaluate_bounds, Bounds};
use super::model::{Params, Shape};
use crate::backend::cpu::Cpu;
use crate::backend::kernels::KernelBackend;
use crate::backend::{Backend, SampleMode};
use crate::data::binarize_batch;
use crate::error::Error;
use crate::png::{encode_png, PngColor};
use crate::rng::{stream, RngKey};
use crate::run::checkpoint::Checkpoint;
use crate::run::files::write_atomically;
use crate::run::progress_bar;
use crate::train::RunIdentity;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// A checkpoint written by `hnca vae --save`.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,

    /// Samples per image for the importance-weighted bound (the literature reports K = 100;
    /// the cost grows linearly with K).
    #[arg(long, default_value_t = 100)]
    pub k: usize,

    /// Seed of the test set's binarization and of every encoder sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Evaluate only the first N test images (for a quick look) [default: all].
    #[arg(long, value_name = "N")]
    pub images: Option<usize>,

    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub setup: crate::setup::SetupArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SampleArgs {
    /// A checkpoint written by `hnca vae --save`.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,

    /// The PNG file to write.
    #[arg(long, value_name = "FILE.png")]
    pub out: PathBuf,

    /// Instead of sampling from the prior, show test digits (left) beside their reconstructions
    /// (right): x → z ~ q(z | x) → p(x | z1).
    #[arg(long)]
    pub reconstruct: bool,

    /// Rows of the grid.
    #[arg(long, default_value_t = 8)]
    pub rows: usize,

    /// Columns of the grid (pairs of digits with --reconstruct).
    #[arg(long, default_value_t = 8)]
    pub cols: usize,

    /// Seed of the samples (and of the test digits' binarization).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Show each pixel's probability under p(x | z1) (grey), or a sampled bit (black and white).
    #[arg(long)]
    pub binary: bool,

    /// Directory holding the MNIST files, for --reconstruct [default: the data/ shipped with hnca].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Where to draw.
    #[arg(long, value_enum, default_value_t = crate::setup::DeviceChoice::Auto)]
    pub device: crate::setup::DeviceChoice,
}

/// The model a checkpoint holds: its run, shape and parameters on the host.
fn load_model(path: &Path) -> Result<(VaeRun, Shape, Params<Vec<f32>>), Error> {
    let mut ck = Checkpoint::load(path)?;
    let as_error = |source| Error::Checkpoint { path: path.to_path_buf(), source };
    let run = VaeRun::from_checkpoint(&ck).map_err(as_error)?;
    let shape = run.shape();
    let params = read_params(&mut ck, &shape).map_err(as_error)?;
    Ok((run, shape, params))
}

pub fn run_eval(args: &EvalArgs) -> Result<(), Error> {
    if args.k == 0 || args.k > 100_000 {
        return Err(Error::Config(format!("--k must be between 1 and 100000, got {}", args.k)));
    }
    if args.images == Some(0) {
        return Err(Error::Config("--images must be at least 1".into()));
    }
    let (run, shape, params) = load_model(&args.checkpoint)?;
    let mut setup = crate::setup::set_up(&args.setup, "evaluating")?;
    if let Some(n) = args.images.filter(|&n| n < setup.data.test.n) {
        let test = &mut setup.data.test;
        test.images.truncate(n * test.pixels());
        test.labels.truncate(n);
        test.n = n;
    }
    if setup.data.test.pixels() != run.data_dim {
        return Err(Error::Config(format!(
            "{}: the model takes {} pixels, the test images have {}",
            args.checkpoint.display(),
            run.data_dim,
            setup.data.test.pixels()
        )));
    }
    eprintln!(
        "hnca eval: {} ({} model {:?}) on {}, K = {}, {} test images",
        args.checkpoint.display(),
        run.estimator.label(),
        run.latent,
        setup.place,
        args.k,
        setup.data.test.n
    );
    let bounds = match setup.gpu {
        Some(d) => bounds_on(&KernelBackend::new(d), &params, &shape, &setup.data.test, &run, args)?,
        None => bounds_on(&Cpu::new(), &params, &shape, &setup.data.test, &run, args)?,
    };
    if args.json {
        let out = serde_json::json!({
            "checkpoint": args.checkpoint.display().to_string(),
            "images": bounds.images,
            "k": bounds.k,
            "elbo": bounds.elbo.mean,
            "elbo_std_err": bounds.elbo.std_err,
            "iwae": bounds.iwae.mean,
            "iwae_std_err": bounds.iwae.std_err,
            "seed": args.seed,
        });
        println!("{out}");
    } else {
        println!(
            "test ELBO (single sample):   {:.3} ± {:.3} nats (standard error over {} images)",
            bounds.elbo.mean, bounds.elbo.std_err, bounds.images
        );
        println!("test bound, K = {:<6}       {:.3} ± {:.3} nats", format!("{}:", bounds.k), bounds.iwae.mean, bounds.iwae.std_err);
    }
    Ok(())
}

fn bounds_on<B: Backend>(
    be: &B,
    host: &Params<Vec<f32>>,
    shape: &Shape,
    split: &crate::data::Split,
    run: &VaeRun,
    args: &EvalArgs,
) -> Result<Bounds, Error> {
    let params = host.to_backend(be);
    let bar = progress_bar(split.n as u64);
    let key = RngKey::new(args.seed, 0, stream::BINARIZE_TEST);
    let bounds = evaluate_bounds(be, &params, shape, split, run.binarize, key, args.k, args.seed, |done| bar.set_position(done as u64));
    bar.finish_and_clear();
    be.check().map_err(Error::Device)?;
    Ok(bounds)
}

/// Pixels of one 28x28 (or whatever the model's) digit per row of `probs`, as grey levels.
fn grey(probs: &[f32]) -> Vec<u8> {
    probs.iter().map(|&p| (255.0 * (1.0 - p.clamp(0.0, 1.0))).round() as u8).collect()
}

pub fn run_sample(args: &SampleArgs) -> Result<(), Error> {
    if args.rows == 0 || args.cols == 0 || args.rows.checked_mul(args.cols).is_none_or(|cells| cells > 4096) {
        return Err(Error::Config(format!(
            "--rows and --cols must be at least 1 and give at most 4096 cells, got {}x{}",
            args.rows, args.cols
        )));
    }
    if args.out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() != Some("png") {
        return Err(Error::Config(format!("--out {}: the file name must end in .png", args.out.display())));
    }
    let (run, shape, host) = load_model(&args.checkpoint)?;
    let side = (run.data_dim as f64).sqrt() as usize;
    if side * side != run.data_dim {
        return Err(Error::Config(format!("the model's {} pixels are not a square image", run.data_dim)));
    }
    let cells = match crate::setup::open_device(args.device, "drawing")? {
        Some(d) => draw_cells(&KernelBackend::new(d), args, &run, &shape, &host)?,
        None => draw_cells(&Cpu::new(), args, &run, &shape, &host)?,
    };
    let (cols, group) = if args.reconstruct { (2 * args.cols, 2) } else { (args.cols, 1) };
    let (width, height, pixels) = grid(&cells, cols, group, side);
    write_atomically(&args.out, &encode_png(width as u32, height as u32, PngColor::Gray8, &pixels))?;
    let what = if args.reconstruct { "test digits and their reconstructions" } else { "samples from the prior" };
    let mode = if args.binary { "sampled pixels" } else { "pixel probabilities" };
    eprintln!("hnca sample: wrote {} ({} {what}, {mode}, {width}x{height})", args.out.display(), cells.len());
    Ok(())
}

/// The grid's cells, drawn on `be`: prior samples, or test digits beside their reconstructions.
fn draw_cells<B: Backend>(be: &B, args: &SampleArgs, run: &VaeRun, shape: &Shape, host: &Params<Vec<f32>>) -> Result<Vec<Vec<u8>>, Error> {
    let params = host.to_backend(be);
    let n = args.rows * args.cols;
    let cells: Vec<Vec<u8>> = if args.reconstruct {
        let data = crate::data::load_mnist(&args.data_dir.clone().unwrap_or_else(crate::data::default_data_dir))?;
        if data.test.pixels() != run.data_dim {
            return Err(Error::Config(format!("the model takes {} pixels, the test images have {}", run.data_dim, data.test.pixels())));
        }
        let indices: Vec<u32> = (0..n.min(data.test.n) as u32).collect();
        let x = binarize_batch(&data.test, &indices, run.binarize, RngKey::new(args.seed, 0, stream::BINARIZE_TEST), run.data_dim);
        let recon = reconstruct(be, &params, shape, &x, indices.len(), args.seed, args.binary);
        let mut cells = Vec::new();
        for (orig, rec) in x.chunks(run.data_dim).zip(recon.chunks(run.data_dim)) {
            cells.push(grey(orig));
            cells.push(grey(rec));
        }
        cells
    } else {
        prior_samples(be, &params, shape, n, args.seed, args.binary).chunks(run.data_dim).map(grey).collect()
    };
    be.check().map_err(Error::Device)?;
    Ok(cells)
}

/// Draws layer by layer from the generative model, z_L ~ p(z_L), z_{l-1} ~ p(z_{l-1} | z_l), and
/// returns p(x | z_1) for each of `n` samples (or a sampled x with `binary`), (n, n_0).
pub fn prior_samples<B: Backend>(be: &B, params: &Params<B::Buf>, shape: &Shape, n: usize, seed: u64, binary: bool) -> Vec<f32> {
    let depth = shape.depth();
    let prior = be.download(&params.prior);
    let logits: Vec<f32> = (0..n).flat_map(|_| prior.iter().copied()).collect();
    let mut z = be.zeros(n * shape.width(depth));
    be.bernoulli_sample(
        &mut z,
        None,
        &be.upload(&logits),
        RngKey::new(seed, depth as u64, stream::eval_encoder(0)),
        None,
        SampleMode::Standard,
        n,
        shape.width(depth),
    );
    decode_down(be, params, shape, z, depth, n, seed, binary)
}

/// From a sample of layer `top`, samples every layer below it down to z_1, then returns p(x | z_1)
/// (or a sampled x).
fn decode_down<B: Backend>(
    be: &B,
    params: &Params<B::Buf>,
    shape: &Shape,
    mut z: B::Buf,
    top: usize,
    n: usize,
    seed: u64,
    binary: bool,
) -> Vec<f32> {
    for m in (1..=top).rev() {
        let d = &params.dec[m - 1];
        let (n_in, n_out) = (shape.width(m), shape.width(m - 1));
        let mut logits = be.zeros(n * n_out);
        be.matmul_forward(&mut logits, &z, &d.w, &d.bias, n, n_in, n_out);
        if m == 1 && !binary {
            return be.download(&logits).iter().map(|&a| crate::math::sigmoid(a)).collect();
        }
        let mut below = be.zeros(n * n_out);
        be.bernoulli_sample(
            &mut below,
            None,
            &logits,
            RngKey::new(seed, m as u64 - 1, stream::eval_encoder(0)),
            None,
            SampleMode::Standard,
            n,
            n_out,
        );
        z = below;
    }
    be.download(&z)
}

/// x (n, n_0) → z_1 ~ q(z_1 | x) → p(x | z_1) (or a sampled x).
fn reconstruct<B: Backend>(be: &B, params: &Params<B::Buf>, shape: &Shape, x: &[f32], n: usize, seed: u64, binary: bool) -> Vec<f32> {
    let d = &params.enc[0];
    let mut logits = be.zeros(n * shape.width(1));
    be.matmul_forward(&mut logits, &be.upload(x), &d.w, &d.bias, n, shape.width(0), shape.width(1));
    let mut z1 = be.zeros(n * shape.width(1));
    be.bernoulli_sample(
        &mut z1,
        None,
        &logits,
        RngKey::new(seed, 0, stream::eval_encoder(1)),
        None,
        SampleMode::Standard,
        n,
        shape.width(1),
    );
    decode_down(be, params, shape, z1, 1, n, seed, binary)
}

/// Lays square `side`x`side` cells out in `cols` columns with a 2-pixel grey margin, each pixel
/// drawn 2x2, and a wider margin after every `group` columns (pairs of digits stay together);
/// returns (width, height, grey pixels).
fn grid(cells: &[Vec<u8>], cols: usize, group: usize, side: usize) -> (usize, usize, Vec<u8>) {
    const SCALE: usize = 2;
    const GAP: usize = 2;
    const GROUP_GAP: usize = 8;
    let rows = cells.len().div_ceil(cols);
    let cell = side * SCALE + GAP;
    let extra = if group > 1 { GROUP_GAP - GAP } else { 0 };
    let x_of = |col: usize| GAP + col * cell + (col / group) * extra;
    let (width, height) = (x_of(cols - 1) + cell, rows * cell + GAP);
    let mut px = vec![160u8; width * height];
    for (i, c) in cells.iter().enumerate() {
        let (x0, y0) = (x_of(i % cols), GAP + (i / cols) * cell);
        for y in 0..side * SCALE {
            for x in 0..side * SCALE {
                px[(y0 + y) * width + x0 + x] = c[(y / SCALE) * side + x / SCALE];
            }
        }
    }
    (width, height, px)
}
