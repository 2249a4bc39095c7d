//! Buffers and arrays, where a backend keeps them; recording a step and replaying it; the
//! device's first failure.

use crate::backend::Elem;

pub trait MemoryOps {
    /// Buffers are Send and Sync so that a batch of runs ([`runs::Runs`]) can hand each run's
    /// slices to a thread of its own.
    type Buf: Send + Sync;
    /// Arrays of the other element types.
    type Array<T: Elem>: Send + Sync;
    /// A recorded step (a CUDA graph), replayed by [`Backend::replay`].
    type Graph: Send;

    fn zeros(&self, n: usize) -> Self::Buf;

    fn upload(&self, host: &[f32]) -> Self::Buf;

    fn download(&self, buf: &Self::Buf) -> Vec<f32>;

    /// Overwrite `dst` (same length) with host data.
    fn write(&self, dst: &mut Self::Buf, host: &[f32]);

    fn array<T: Elem>(&self, host: &[T]) -> Self::Array<T>;

    fn read_array<T: Elem>(&self, a: &Self::Array<T>) -> Vec<T>;

    fn write_array<T: Elem>(&self, a: &mut Self::Array<T>, host: &[T]);

    /// Whether reading from the backend's memory is free (the CPU), or waits for a device.
    fn host_reads_are_free(&self) -> bool {
        true
    }

    /// Where the backend merges the launches of a batch of runs ([`crate::backend::runs::Runs`])
    /// into one launch each, its way of doing so (a device's kernel backend); else the runs'
    /// operations run as they are issued.
    fn launch_merging(&self) -> Option<&dyn LaunchMerging> {
        None
    }

    /// Overwrites run `r`'s slice of `dst` with host data (one run's length).
    fn write_run(&self, dst: &mut Self::Buf, r: usize, host: &[f32]) {
        assert_eq!(r, 0, "a backend of one run has only run 0");
        self.write(dst, host)
    }

    /// Run `r`'s slice of `buf`.
    fn download_run(&self, buf: &Self::Buf, r: usize) -> Vec<f32> {
        assert_eq!(r, 0, "a backend of one run has only run 0");
        self.download(buf)
    }

    fn write_array_run<T: Elem>(&self, a: &mut Self::Array<T>, r: usize, host: &[T]) {
        assert_eq!(r, 0, "a backend of one run has only run 0");
        self.write_array(a, host)
    }

    fn read_array_run<T: Elem>(&self, a: &Self::Array<T>, r: usize) -> Vec<T> {
        assert_eq!(r, 0, "a backend of one run has only run 0");
        self.read_array(a)
    }

    /// Starts recording the operations that follow instead of running them (stream capture);
    /// false where the backend does not record, and then they run as they are called.
    fn begin_recording(&self) -> bool {
        false
    }

    /// Ends a recording begun by `begin_recording` and makes it replayable.
    fn end_recording(&self) -> Result<Self::Graph, String>;

    /// Runs a recorded sequence again.
    fn replay(&self, graph: &Self::Graph);

    /// The first failure of a device operation since the last check (a GPU backend records
    /// driver errors instead of panicking in the middle of a step).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Merging the launches of a batch of runs ([`crate::backend::runs::Runs`]): between
/// `begin_runs` and `end_runs` the runs issue one operation one after another, each after
/// `next_run`; the device holds their launches back and merges the i-th launch of every run into
/// one launch over a grid dimension of runs. Nothing is read back in between.
pub trait LaunchMerging {
    fn begin_runs(&self, runs: usize);
    fn next_run(&self);
    fn end_runs(&self);
}
