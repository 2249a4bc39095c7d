//! HNCA: Hindsight Network Credit Assignment for networks of Bernoulli units.
pub mod data;
pub mod math;
pub mod rng;
