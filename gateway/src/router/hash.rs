//! Stable hashing for sticky variant assignment. The std hasher is not
//! guaranteed stable across Rust releases, and assignments must survive
//! upgrades and agree between gateway processes, so the hash is spelled out.

/// FNV-1a over `route`, a separator and `key`, finished with the SplitMix64
/// mixer so that nearby keys spread evenly; mapped onto `0..total`.
pub fn sticky_point(route: &str, key: &str, total: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in route
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(key.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    // Multiply-shift maps uniformly onto 0..total without modulo bias.
    ((u128::from(h) * u128::from(total)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_in_range() {
        assert_eq!(
            sticky_point("r", "user-1", 100),
            sticky_point("r", "user-1", 100)
        );
        for i in 0..1000 {
            assert!(sticky_point("r", &format!("u{i}"), 7) < 7);
        }
    }

    #[test]
    fn spreads_evenly() {
        let mut buckets = [0u32; 10];
        for i in 0..100_000 {
            buckets[sticky_point("route", &format!("user-{i}"), 10) as usize] += 1;
        }
        for b in buckets {
            assert!((9_500..=10_500).contains(&b), "{buckets:?}");
        }
    }
}
