//! HNCA: Hindsight Network Credit Assignment for networks of Bernoulli units, and the gradient
//! estimators it is compared with, on a discrete VAE over binarized MNIST.

// Backend operations take llm.c-style explicit shapes (b, k, n, ...) so that each mirrors its
// CUDA kernel's parameter list, and index loops over several arrays read like those kernels.
#![allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub mod app;
pub mod backend;
pub mod bandit;
pub mod bench;
pub mod bookkeeping;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod error;
pub mod estimator;
pub mod evaluate;
pub mod inspect;
pub mod math;
pub mod model;
pub mod plot;
pub mod png;
pub mod rng;
pub mod step;
pub mod train;
