//! The operations the estimators are written over, by topic: one trait per topic, each laid out
//! under the same stem in every layer (`kernels/<topic>.cu`, `src/backend/kernels/<topic>.rs`,
//! `src/backend/cpu/<topic>.rs`). [`crate::backend::Backend`] is their sum.

mod bernoulli;
mod conv;
mod credit;
mod dense;
mod ksample;
mod memory;
mod softmax;
mod state;

pub use bernoulli::*;
pub use conv::*;
pub use credit::*;
pub use dense::*;
pub use ksample::*;
pub use memory::*;
pub use softmax::*;
pub use state::*;
