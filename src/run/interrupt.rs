//! SIGTERM and SIGINT end a run at a step boundary instead of killing it: the signal only sets a
//! flag, the run driver checks it after every step, writes a checkpoint of the finished step and
//! returns [`crate::error::Error::Interrupted`], whose exit status ([`EXIT_INTERRUPTED`]) tells a
//! batch script to requeue. A second signal ends the program at once, as if none were handled.
//! Knows no experiment.

use std::sync::atomic::{AtomicI32, Ordering};

pub use crate::error::EXIT_INTERRUPTED;

/// The signal that asked the program to stop, 0 while none has.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

#[cfg(unix)]
mod unix {
    use std::sync::atomic::Ordering;

    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
    const SIG_DFL: usize = 0;

    extern "C" {
        // From the C library every Rust program on Unix links; glibc's and musl's `signal`
        // keep the handler installed and restart interrupted system calls (BSD semantics).
        fn signal(signum: i32, handler: usize) -> usize;
        fn raise(sig: i32) -> i32;
    }

    /// Runs on whichever thread the signal lands on: only an atomic store and, for a second
    /// signal, async-signal-safe calls that restore the default action and re-raise it.
    extern "C" fn on_signal(sig: i32) {
        if super::RECEIVED.swap(sig, Ordering::SeqCst) != 0 {
            unsafe {
                signal(sig, SIG_DFL);
                raise(sig);
            }
        }
    }

    pub fn install() {
        let handler = on_signal as extern "C" fn(i32) as usize;
        for sig in [SIGINT, SIGTERM] {
            // SAFETY: the handler is async-signal-safe (see above) and lives as long as the program.
            unsafe {
                signal(sig, handler);
            }
        }
    }
}

/// From now on SIGTERM and SIGINT ask the runs to stop at the next step boundary (idempotent).
pub fn install() {
    #[cfg(unix)]
    unix::install();
}

/// Whether a signal has asked the program to stop.
pub fn requested() -> bool {
    RECEIVED.load(Ordering::SeqCst) != 0
}

/// The signal's name, for messages ("SIGTERM"), or "a signal".
pub fn signal_name() -> &'static str {
    match RECEIVED.load(Ordering::SeqCst) {
        #[cfg(unix)]
        unix::SIGTERM => "SIGTERM",
        #[cfg(unix)]
        unix::SIGINT => "SIGINT",
        _ => "a signal",
    }
}
