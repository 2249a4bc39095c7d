//! A training step on the CPU backend allocates no buffers: everything of the batch's size lives
//! in the workspace, and the credit pass's scratch rows are per-thread and reused. A counting
//! global allocator measures it. What remains: matrixmultiply allocates a packing buffer in each
//! call, and the step's bookkeeping makes a few small vectors (references to the parameter
//! tensors, per-layer statistics).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use hnca::backend::cpu::{sgemm_calls, Cpu};
use hnca::rng::RngKey;
use hnca::vae::estimator::{Estimator, EstimatorKind};
use hnca::vae::model::Shape;
use hnca::vae::trainer::Trainer;

struct Counting;
/// Allocations of at least `LARGE` bytes, and the bytes of all smaller ones.
static LARGE_CALLS: AtomicUsize = AtomicUsize::new(0);
static SMALL_BYTES: AtomicUsize = AtomicUsize::new(0);
const LARGE: usize = 1024;

fn count(size: usize) {
    if size >= LARGE {
        LARGE_CALLS.fetch_add(1, Relaxed);
    } else {
        SMALL_BYTES.fetch_add(size, Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_training_step_allocates_no_buffers() {
    let be = Cpu::new();
    let b = 50;
    let key = RngKey::new(1, 0, 9);
    let x: Vec<f32> = (0..(b * 784) as u32).map(|i| (key.uniform(i) < 0.13) as u8 as f32).collect();
    for kind in EstimatorKind::ALL {
        let mut trainer = Trainer::new(&be, Shape::new(784, &[200, 200, 200]), Estimator::new(kind), b, 1e-4, 0);
        // The first steps grow the per-thread scratch of every rayon worker that runs a row.
        for _ in 0..3 {
            trainer.train_step(&x);
        }
        let (large, small, gemms) = (LARGE_CALLS.load(Relaxed), SMALL_BYTES.load(Relaxed), sgemm_calls());
        let steps = 5;
        // On a thread of the pool, as `hnca vae` trains (each parallel operation a push to that
        // thread's queue, not an injection into the pool that now and then allocates a block).
        Cpu::on_pool(|| {
            for _ in 0..steps {
                trainer.train_step(&x);
            }
        });
        let large = (LARGE_CALLS.load(Relaxed) - large) / steps;
        let small = (SMALL_BYTES.load(Relaxed) - small) / steps;
        let gemms = (sgemm_calls() - gemms) / steps;
        eprintln!("{}: per step {large} allocations of {LARGE}+ bytes for {gemms} GEMM calls, {small} bytes in smaller ones", kind.name());
        assert_eq!(large, gemms, "{}: buffer-sized allocations besides matrixmultiply's packing buffers", kind.name());
        assert!(small < 2048, "{}: {small} bytes of small allocations per step", kind.name());
    }
}
