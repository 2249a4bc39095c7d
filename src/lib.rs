//! HNCA: Hindsight Network Credit Assignment for networks of Bernoulli units, and the gradient
//! estimators it is compared with, on a discrete VAE and a contextual bandit over binarized MNIST.
//!
//! Generic parts (they know no experiment): [`backend`] (the operations a step is written over,
//! on the CPU and as CUDA kernels), [`run`] (the run driver, checkpoints, the files of a run),
//! [`train`] (one trainer, run and batch of runs over any experiment's model),
//! [`data`], [`rng`], [`math`], [`nn`], [`setup`], [`plot`], [`png`], [`error`], [`sweep`] (grids
//! of runs, here or on Slurm) and [`report`]. Experiments:
//! [`vae`], [`bandit`]. Commands: [`cli`], [`app`], [`selftest`].

// Backend operations take llm.c-style explicit shapes (b, k, n, ...) so that each mirrors its
// CUDA kernel's parameter list, and index loops over several arrays read like those kernels.
#![allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub mod app;
pub mod backend;
pub mod bandit;
pub mod cli;
pub mod data;
pub mod error;
pub mod estimator;
pub mod math;
pub mod nn;
pub mod plot;
pub mod png;
pub mod report;
pub mod rng;
pub mod run;
pub mod selftest;
pub mod setup;
pub mod sweep;
pub mod train;
pub mod vae;
