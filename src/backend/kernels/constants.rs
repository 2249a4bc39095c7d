//! Constants of the kernel backend: values a step passes by device address that do not change
//! between steps (estimators' coefficients, the statistics' plans, tables of device addresses,
//! a batch's tables of parameter structs), uploaded on first use and reused by content, so that
//! a recorded step uploads nothing.

use std::collections::HashMap;

use super::{Device, KernelBackend, Ptr};

pub(super) struct Constants<D: Device> {
    pub(super) f32s: HashMap<Vec<u32>, D::Buf>,
    pub(super) u32s: HashMap<Vec<u32>, D::Array<u32>>,
    pub(super) u64s: HashMap<Vec<u64>, D::Array<u64>>,
    pub(super) f64s: HashMap<Vec<u64>, D::Array<f64>>,
    /// Batched launches' tables of their runs' parameter structs, by content.
    pub(super) tables: HashMap<Vec<u8>, D::Array<u8>>,
}

impl<D: Device> Constants<D> {
    pub(super) fn new() -> Self {
        Constants { f32s: HashMap::new(), u32s: HashMap::new(), u64s: HashMap::new(), f64s: HashMap::new(), tables: HashMap::new() }
    }
}

impl<D: Device> KernelBackend<D> {
    /// The device address of the constant `host` (f32), uploaded on first use.
    pub(super) fn f32_constant(&self, host: &[f32]) -> Ptr {
        let mut c = self.constants.lock().expect("constants lock");
        let key: Vec<u32> = host.iter().map(|v| v.to_bits()).collect();
        let buf = c.f32s.entry(key).or_insert_with(|| self.device.upload(host));
        // A constant is written once, before any launch reads it, on the same stream.
        let (ptr, guard) = self.device.ptr(buf);
        drop(guard);
        ptr
    }

    pub(super) fn u32_constant(&self, host: &[u32]) -> Ptr {
        let mut c = self.constants.lock().expect("constants lock");
        let a = c.u32s.entry(host.to_vec()).or_insert_with(|| self.device.array(host));
        let (ptr, guard) = self.device.array_ptr(a);
        drop(guard);
        ptr
    }

    pub(super) fn u64_constant(&self, host: &[u64]) -> Ptr {
        let mut c = self.constants.lock().expect("constants lock");
        let a = c.u64s.entry(host.to_vec()).or_insert_with(|| self.device.array(host));
        let (ptr, guard) = self.device.array_ptr(a);
        drop(guard);
        ptr
    }

    pub(super) fn f64_constant(&self, host: &[f64]) -> Ptr {
        let mut c = self.constants.lock().expect("constants lock");
        let a = c.f64s.entry(host.iter().map(|v| v.to_bits()).collect()).or_insert_with(|| self.device.array(host));
        let (ptr, guard) = self.device.array_ptr(a);
        drop(guard);
        ptr
    }
}
