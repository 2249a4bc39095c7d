//! Batched launches (see `Backend::begin_runs` and src/backend/runs.rs): while a batch's runs
//! issue one operation, the kernel backend holds their launches back, then launches each
//! kernel's batched twin once for all of them (`KERNEL` in kernels/common.cuh), with a device
//! table of the runs' parameter structs. The tables are uploaded once, by content.

use super::{Device, KernelBackend, KernelParams, Ptr, RngKeyC};

/// A parameter field's bytes as the kernel reads them (little-endian, as both devices are).
pub(super) trait FieldBytes {
    fn put(&self, out: &mut [u8]);
}
macro_rules! field_bytes {
    ($($t:ty),*) => {$(
        impl FieldBytes for $t {
            fn put(&self, out: &mut [u8]) {
                let b = self.to_le_bytes();
                out[..b.len()].copy_from_slice(&b);
            }
        }
    )*};
}
field_bytes!(u32, u64, i32, i64, f32, f64);
impl FieldBytes for RngKeyC {
    fn put(&self, out: &mut [u8]) {
        use std::mem::offset_of;
        self.seed_lo.put(&mut out[offset_of!(RngKeyC, seed_lo)..]);
        self.seed_hi.put(&mut out[offset_of!(RngKeyC, seed_hi)..]);
        self.step_lo.put(&mut out[offset_of!(RngKeyC, step_lo)..]);
        self.step_hi.put(&mut out[offset_of!(RngKeyC, step_hi)..]);
        self.stream.put(&mut out[offset_of!(RngKeyC, stream)..]);
        self.clock.put(&mut out[offset_of!(RngKeyC, clock)..]);
    }
}

/// A launch held back while a batch's runs issue one operation: the kernel, its shape and its
/// parameters as the kernel reads them.
pub(super) struct Held {
    name: &'static str,
    grid: [u32; 3],
    block: [u32; 3],
    params: Vec<u8>,
}

impl<D: Device> KernelBackend<D> {
    /// Launches `p`'s kernel, or holds the launch back for the batch of runs being issued.
    pub(super) fn launch<P: KernelParams>(&self, grid: [u32; 3], block: [u32; 3], p: &P) {
        let mut pending = self.pending.lock().expect("pending launches lock");
        match pending.as_mut().and_then(|runs| runs.last_mut()) {
            Some(run) => run.push(Held { name: P::NAME, grid, block, params: p.to_bytes() }),
            None => self.device.launch(grid, block, p),
        }
    }

    pub(super) fn holding(&self) -> bool {
        self.pending.lock().expect("pending launches lock").is_some()
    }

    /// The device address of a table of parameter structs, uploaded on first use (a batch's
    /// first step, which is never recorded, uploads every table its recorded steps use).
    fn table(&self, bytes: Vec<u8>) -> Ptr {
        let mut c = self.constants.lock().expect("constants lock");
        let a = c.tables.entry(bytes).or_insert_with_key(|bytes| self.device.array(bytes));
        let (ptr, guard) = self.device.array_ptr(a);
        drop(guard);
        ptr
    }

    /// Starts holding launches back: a batch of `runs` runs issues one operation.
    pub(super) fn hold_launches(&self, runs: usize) {
        let mut pending = self.pending.lock().expect("pending launches lock");
        assert!(pending.is_none(), "batched operations do not nest");
        *pending = Some(Vec::with_capacity(runs));
    }
    /// The launches that follow are the next run's.
    pub(super) fn hold_next_run(&self) {
        self.pending.lock().expect("pending launches lock").as_mut().expect("next_run after begin_runs").push(Vec::new());
    }
    /// Launches each run's i-th held launch as one launch of its batched twin, grid z the runs
    /// (every run of a batch has the same shapes, so the same launches).
    pub(super) fn launch_held(&self) {
        let runs = self.pending.lock().expect("pending launches lock").take().expect("end_runs after begin_runs");
        let Some(first) = runs.first() else { return };
        for (i, h) in first.iter().enumerate() {
            let mut table = Vec::with_capacity(h.params.len() * runs.len());
            for run in &runs {
                let same = run.len() == first.len() && run[i].name == h.name && run[i].grid == h.grid && run[i].block == h.block;
                assert!(same, "the runs of a batch launch different kernels");
                table.extend_from_slice(&run[i].params);
            }
            assert_eq!(h.grid[2], 1, "kernel {} uses the grid's z, which a batch takes for its runs", h.name);
            let table = self.table(table);
            self.device.launch_runs(h.name, [h.grid[0], h.grid[1], runs.len() as u32], h.block, table);
        }
    }
}
