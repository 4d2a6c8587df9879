use super::*;

fn filled(values: impl IntoIterator<Item = (i64, f64)>, cap: usize) -> Quantiles {
    let mut q = Quantiles::default();
    for (ts, value) in values {
        q.record(ts, value, cap);
    }
    q
}

fn at(q: &Quantiles, now: i64, window_ms: i64, quantile: f64) -> f64 {
    q.quantile(now, window_ms, quantile, &mut Vec::new())
}

#[test]
fn small_windows_are_exact_and_interpolated_like_quantile_over_time() {
    // Ten samples 1..=10, given out of order.
    let q = filled(
        [3, 1, 4, 10, 5, 9, 2, 6, 8, 7].map(|v| (v * 100, v as f64)),
        256,
    );
    let now = 1_000;
    assert_eq!(at(&q, now, 10_000, 0.0), 1.0);
    assert_eq!(at(&q, now, 10_000, 0.5), 5.5);
    assert!((at(&q, now, 10_000, 0.9) - 9.1).abs() < 1e-9);
    assert!((at(&q, now, 10_000, 0.99) - 9.91).abs() < 1e-9);
    assert_eq!(at(&q, now, 10_000, 1.0), 10.0);
}

#[test]
fn the_window_covers_now_minus_window_exclusive_to_now_inclusive() {
    let q = filled([(1_000, 1.0), (2_000, 50.0), (3_000, 100.0)], 256);
    // (1000, 3000]: 50 and 100.
    assert_eq!(at(&q, 3_000, 2_000, 0.0), 50.0);
    // Samples after `now` (another entity's clock is not involved, but a late query is).
    assert_eq!(at(&q, 2_000, 5_000, 1.0), 50.0);
    assert!(
        at(&q, 10_000, 1_000, 0.5).is_nan(),
        "an empty window has no percentile"
    );
}

#[test]
fn expiry_drops_what_no_window_reaches() {
    let mut q = filled((0..100).map(|i| (i * 1_000, i as f64)), 256);
    q.expire(99_000, 10_000);
    assert_eq!(q.len(), 10);
    assert_eq!(at(&q, 99_000, 60_000, 0.0), 90.0);
}

#[test]
fn a_busy_series_is_thinned_to_the_cap_and_stays_a_close_estimate() {
    let cap = 256;
    // 10,000 samples in 10 s, values a shuffled 0..10,000 (a multiplicative permutation).
    let q = filled(
        (0..10_000i64).map(|i| (i, ((i * 7_919) % 10_000) as f64)),
        cap,
    );
    assert!(q.len() <= cap, "{} samples held", q.len());
    // About 200 samples stand for 10,000: a rank error of a few percent is what a random
    // sample of that size gives (the standard error of the median is 3.5%).
    for (quantile, exact) in [(0.5, 4_999.5), (0.9, 8_999.1), (0.99, 9_899.01)] {
        let estimate = at(&q, 10_000, 20_000, quantile);
        let rank_error = (estimate - exact).abs() / 10_000.0;
        assert!(rank_error < 0.08, "q{quantile}: {estimate} vs {exact}");
    }
}
