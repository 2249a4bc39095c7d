pub mod exact;
pub mod fake_cuda;

/// Says why a test is skipped where it is always seen: libtest captures `eprintln!` of passing
/// tests, but not writes to the stderr handle itself.
pub fn skip(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {reason}");
}
