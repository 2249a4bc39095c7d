//! The constants the kernels and every backend share, each a `#define NAME <integer>` of
//! kernels/*.cu turned into a Rust `u32` by build.rs: launch geometry, table layouts, and the
//! modes the kernels switch on (the K-sample combinations, the score function's alternatives).
//! Backend-neutral: the CPU backend and the estimators read them here, never from the kernel
//! backend, and each Rust enum of modes maps onto them in one place.

include!(concat!(env!("OUT_DIR"), "/consts.rs"));
