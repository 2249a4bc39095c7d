//! HNCA: Hindsight Network Credit Assignment for networks of Bernoulli units, and the gradient
//! estimators it is compared with, on a discrete VAE over binarized MNIST.
pub mod backend;
pub mod data;
pub mod estimator;
pub mod math;
pub mod model;
pub mod rng;
pub mod step;
pub mod cli;
pub mod error;
pub mod train;
