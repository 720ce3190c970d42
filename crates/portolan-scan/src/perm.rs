//! A random permutation of `0..n` computed one element at a time, in constant memory: a
//! balanced Feistel network over the smallest even number of bits that covers `n`, with
//! cycle walking to stay inside `0..n`. The same seed gives the same order on every
//! machine, which is what makes `--shard I/N` and `--resume` possible.

/// A seeded bijection on `0..n`.
#[derive(Debug, Clone)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    mask: u64,
    keys: [u64; 4],
}

/// splitmix64: a fast, well-mixed 64-bit function, used for round keys and the round
/// function. Not cryptographic, and it need not be: the goal is an order that spreads load,
/// not one that hides it.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Permutation {
    /// A permutation of `0..n` (`n >= 1`) chosen by `seed`.
    pub fn new(n: u64, seed: u64) -> Permutation {
        let n = n.max(1);
        let bits = (64 - (n - 1).leading_zeros()).max(2);
        let bits = bits + (bits & 1); // even, so both halves are the same width
        let half_bits = bits / 2;
        let mut keys = [0u64; 4];
        let mut s = seed;
        for k in &mut keys {
            s = mix(s);
            *k = s;
        }
        Permutation {
            n,
            half_bits,
            mask: (1u64 << half_bits) - 1,
            keys,
        }
    }

    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    fn feistel(&self, x: u64) -> u64 {
        let mut l = x >> self.half_bits;
        let mut r = x & self.mask;
        for k in self.keys {
            let f = mix(r ^ k) & self.mask;
            (l, r) = (r, l ^ f);
        }
        (l << self.half_bits) | r
    }

    /// The element at position `i` (`i < n`). Cycle walking: re-apply the network until
    /// the value falls inside `0..n`; since the network permutes `0..2^bits` and
    /// `2^bits < 4n`, this takes fewer than four steps on average and always ends.
    pub fn at(&self, i: u64) -> u64 {
        debug_assert!(i < self.n);
        let mut x = i;
        loop {
            x = self.feistel(x);
            if x < self.n {
                return x;
            }
        }
    }
}

/// Which positions of the permutation one shard visits: `shard`, `shard + count`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` with `0 <= I < N` (shards are numbered from 0).
    pub fn parse(s: &str) -> Option<Shard> {
        let (i, n) = s.trim().split_once('/')?;
        let (index, count) = (i.parse().ok()?, n.parse().ok()?);
        (count >= 1 && index < count).then_some(Shard { index, count })
    }

    /// Number of positions of `0..n` this shard visits.
    pub fn positions(self, n: u64) -> u64 {
        if self.index >= n {
            0
        } else {
            (n - self.index - 1) / self.count + 1
        }
    }

    /// The k-th position this shard visits.
    pub fn position(self, k: u64) -> u64 {
        self.index + k * self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_bijection_for_many_sizes() {
        for n in [1u64, 2, 3, 5, 17, 100, 1000, 4097, 65_535] {
            let p = Permutation::new(n, 42);
            let mut seen = vec![false; usize::try_from(n).unwrap()];
            for i in 0..n {
                let v = usize::try_from(p.at(i)).unwrap();
                assert!(!seen[v], "n={n}: {v} twice");
                seen[v] = true;
            }
        }
    }

    #[test]
    fn order_depends_on_seed_and_is_not_identity() {
        let a: Vec<u64> = (0..50).map(|i| Permutation::new(1000, 1).at(i)).collect();
        let b: Vec<u64> = (0..50).map(|i| Permutation::new(1000, 2).at(i)).collect();
        assert_ne!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
        let again: Vec<u64> = (0..50).map(|i| Permutation::new(1000, 1).at(i)).collect();
        assert_eq!(a, again);
    }

    #[test]
    fn shards_cover_everything_exactly_once() {
        let n = 10_007;
        let p = Permutation::new(n, 9);
        let mut seen = vec![0u8; 10_007];
        for idx in 0..3 {
            let s = Shard {
                index: idx,
                count: 3,
            };
            for k in 0..s.positions(n) {
                seen[usize::try_from(p.at(s.position(k))).unwrap()] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
        assert_eq!(Shard::parse("2/3"), Some(Shard { index: 2, count: 3 }));
        assert_eq!(Shard::parse("3/3"), None);
        assert_eq!(Shard::parse("0/0"), None);
        assert_eq!(Shard { index: 5, count: 8 }.positions(3), 0);
    }

    #[test]
    fn huge_domains_are_fine() {
        let n = 65_534u64 * 1000; // a /16 times the top 1000 ports
        let p = Permutation::new(n, 7);
        // A bijection: a sample of positions lands on distinct values in range, and the
        // order is not the identity.
        let sample: Vec<u64> = (0..10_000).map(|i| p.at(i * (n / 10_000))).collect();
        assert!(sample.iter().all(|&v| v < n));
        let distinct: std::collections::BTreeSet<u64> = sample.iter().copied().collect();
        assert_eq!(distinct.len(), sample.len());
        assert!(
            sample
                .iter()
                .enumerate()
                .filter(|&(i, &v)| v == i as u64 * (n / 10_000))
                .count()
                < 10
        );
    }
}
