use super::*;

/// `n` items. The candidate passes a fraction `c.0` of them at cost `c.1`
/// each (± 10 %), the incumbent `i.0` at `i.1`, the chain `h.0` at `h.1`;
/// the items each arm passes are the first ones, so arms of equal pass
/// rates agree item by item.
fn items(n: usize, c: (f64, f64), i: (f64, f64), h: (f64, f64)) -> Vec<Item> {
    let answer = |k: usize, (pass, cost): (f64, f64)| Answer {
        quality: if (k as f64) < n as f64 * pass {
            1.0
        } else {
            0.0
        },
        cost: cost * (0.9 + 0.1 * (k % 3) as f64),
    };
    (0..n)
        .map(|k| Item {
            candidate: answer(k, c),
            incumbent: answer(k, i),
            chain: answer(k, h),
        })
        .collect()
}

fn gate() -> Gate {
    Gate::default() // 50 items, min_gain 5 %, non-inferiority 0.02, 95 %
}

fn failed(v: &Verdict) -> Vec<&str> {
    v.checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| c.name.as_str())
        .collect()
}

#[test]
fn a_cheaper_candidate_answering_as_the_incumbent_passes_on_50_items() {
    // Same items right as the incumbent, the chain one more in 20, at a
    // half and a quarter of their costs.
    let v = judge(
        &gate(),
        &items(50, (0.8, 0.001), (0.8, 0.002), (0.84, 0.004)),
    );
    assert!(v.pass(), "{v:?}");
}

#[test]
fn a_cheaper_candidate_that_answers_worse_is_rejected_on_quality() {
    let v = judge(
        &gate(),
        &items(50, (0.6, 0.0005), (0.8, 0.002), (0.84, 0.004)),
    );
    assert_eq!(failed(&v), vec!["quality vs incumbent"], "{v:?}");
    assert!(
        v.reasons().starts_with("quality vs incumbent: -0.200"),
        "{}",
        v.reasons()
    );
}

#[test]
fn a_gain_below_the_margin_is_rejected() {
    // 2 % cheaper than the incumbent at equal quality: +2 %, 5 % needed.
    let v = judge(
        &gate(),
        &items(50, (0.8, 0.00098), (0.8, 0.001), (0.8, 0.004)),
    );
    assert_eq!(failed(&v), vec!["quality per dollar vs incumbent"], "{v:?}");
}

#[test]
fn too_few_items_or_an_incumbent_without_quality_never_pass() {
    let v = judge(&gate(), &items(1, (1.0, 0.001), (1.0, 0.002), (1.0, 0.004)));
    assert!(!v.pass());
    assert!(v.checks.iter().all(|c| c.estimate.is_none()), "{v:?}");
    assert!(v.reasons().contains("not enough graded answers"));
    let v = judge(
        &gate(),
        &items(50, (0.5, 0.001), (0.0, 0.002), (0.8, 0.004)),
    );
    assert_eq!(failed(&v), vec!["quality per dollar vs incumbent"], "{v:?}");
}

#[test]
fn pairing_is_what_lets_50_items_show_non_inferiority() {
    // The candidate misses 2 of the incumbent's 40 right answers, on items
    // where they otherwise agree: -0.04 ± 0.03, not within 0.02 ...
    let mut xs = items(50, (0.8, 0.001), (0.8, 0.002), (0.8, 0.004));
    xs[0].candidate.quality = 0.0;
    xs[1].candidate.quality = 0.0;
    let v = judge(&gate(), &xs);
    let (point, lower) = v.checks[2].estimate.unwrap();
    assert!((point + 0.04).abs() < 1e-9 && lower < -0.02, "{v:?}");
    // ... but within a 0.1 margin, which independent arms of 50 binary
    // answers (standard error 0.08) could never show.
    let wide = Gate {
        non_inferiority: 0.1,
        ..gate()
    };
    assert!(judge(&wide, &xs).pass(), "{:?}", judge(&wide, &xs));
}
