//! The comparison helpers of tests/common/compare.rs refuse non-finite values on either side:
//! a test comparing two backends must fail when one of them produces NaN or infinity, whatever
//! the other produced.

mod common;

use common::compare::{assert_close, assert_close_f64, assert_close_normwise, normwise};

fn fails(f: impl FnOnce() + std::panic::UnwindSafe) -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let failed = std::panic::catch_unwind(f).is_err();
    std::panic::set_hook(hook);
    failed
}

#[test]
fn helpers_fail_on_nan_or_infinity_on_either_side() {
    let finite = [1.0f32, -2.0, 0.5];
    let bad_values = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    for bad in bad_values {
        let mut with_bad = finite;
        with_bad[1] = bad;
        let all_bad = [bad; 3];
        for (got, want) in [(with_bad, finite), (finite, with_bad), (all_bad, all_bad), (all_bad, finite), (finite, all_bad)] {
            assert!(fails(move || assert_close("t", &got, &want, 1e-3)), "assert_close accepted {got:?} vs {want:?}");
            assert!(fails(move || assert_close_normwise("t", &got, &want, 1e-3)), "assert_close_normwise accepted {got:?} vs {want:?}");
            let accepted = normwise(&got, &want) <= 1e-3;
            assert!(!accepted, "normwise accepted {got:?} vs {want:?}");
        }
        assert!(fails(move || assert_close_f64("t", bad as f64, bad as f64, 1e-3, 1.0)));
        assert!(fails(move || assert_close_f64("t", 1.0, bad as f64, 1e-3, 1.0)));
    }
}

#[test]
fn helpers_accept_close_values_and_reject_distant_ones() {
    let want = [1.0f32, -2.0, 0.5, 0.0];
    let near = [1.0f32 + 1e-7, -2.0, 0.5, 1e-8];
    let far = [1.0f32, -2.1, 0.5, 0.0];
    assert_close("near", &near, &want, 1e-5);
    assert_close_normwise("near", &near, &want, 1e-5);
    assert!(normwise(&near, &want) <= 1e-5);
    assert!(fails(move || assert_close("far", &far, &want, 1e-5)));
    assert!(fails(move || assert_close_normwise("far", &far, &want, 1e-5)));
    assert!(normwise(&far, &want) > 1e-2);
    assert_close_f64("near", 1.0 + 1e-12, 1.0, 1e-9, 1.0);
    assert!(fails(|| assert_close_f64("far", 1.1, 1.0, 1e-9, 1.0)));
}
