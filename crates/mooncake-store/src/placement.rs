//! Replica placement: the order in which mounted segments are tried for a new object.
//!
//! Pure: segments come in as [`Candidate`]s, randomness as a seeded [`Rng`]. The master
//! tries candidates in the returned order and never puts two replicas of one object on
//! the same segment name.

/// A small, fast, seedable PRNG (SplitMix64): placement needs cheap, reproducible choices,
/// not cryptographic ones.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// What placement knows about one mounted segment.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Segment name.
    pub name: &'a str,
    /// Host of the owner.
    pub host_id: &'a str,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Free bytes.
    pub free: u64,
}

/// Mooncake's `--allocation_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlacementStrategy {
    /// Random start, then consecutive probing (at most 100 probes). Mooncake's default.
    #[default]
    Random,
    /// Highest free/capacity ratio first, among a sample of 6 × needed candidates.
    FreeRatioFirst,
    /// Segments on the writer's host first, then random.
    LocalFirst,
}

impl std::str::FromStr for PlacementStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "random" => Ok(Self::Random),
            "free_ratio_first" => Ok(Self::FreeRatioFirst),
            "local_first" => Ok(Self::LocalFirst),
            other => Err(format!(
                "unknown allocation strategy {other:?} (expected random, free_ratio_first or local_first)"
            )),
        }
    }
}

/// Inputs of one placement decision besides the candidates.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlacementRequest<'a> {
    /// Replicas wanted.
    pub replicas: usize,
    /// Segment names to try first, in order.
    pub preferred: &'a [String],
    /// The writer's host, for `LocalFirst`.
    pub writer_host: Option<&'a str>,
}

impl PlacementStrategy {
    /// Indices into `candidates`, in the order they should be tried. Preferred names come
    /// first; every index appears at most once.
    pub fn order(
        self,
        candidates: &[Candidate<'_>],
        req: &PlacementRequest<'_>,
        rng: &mut Rng,
    ) -> Vec<usize> {
        let n = candidates.len();
        let mut out = Vec::with_capacity(n.min(100));
        let mut used = vec![false; n];
        for p in req.preferred {
            for (i, c) in candidates.iter().enumerate() {
                if !used[i] && c.name == p.as_str() {
                    used[i] = true;
                    out.push(i);
                }
            }
        }
        if n == 0 {
            return out;
        }
        let mut rest: Vec<usize> = match self {
            PlacementStrategy::Random => {
                let start = rng.below(n);
                (0..n.min(100)).map(|k| (start + k) % n).collect()
            }
            PlacementStrategy::FreeRatioFirst => {
                let sample = req.replicas.max(1).saturating_mul(6).min(n);
                let start = rng.below(n);
                let mut picked: Vec<usize> = (0..sample).map(|k| (start + k) % n).collect();
                let ratio = |i: usize| {
                    let c = &candidates[i];
                    if c.capacity == 0 {
                        0.0
                    } else {
                        c.free as f64 / c.capacity as f64
                    }
                };
                picked.sort_by(|a, b| ratio(*b).total_cmp(&ratio(*a)));
                picked.extend((0..n).map(|k| (start + sample + k) % n).take(n - sample));
                picked
            }
            PlacementStrategy::LocalFirst => {
                let start = rng.below(n);
                let mut all: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
                if let Some(host) = req.writer_host {
                    all.sort_by_key(|i| candidates[*i].host_id != host);
                }
                all
            }
        };
        rest.retain(|i| !used[*i]);
        out.extend(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands<'a>(names: &'a [&'a str], free: &[u64]) -> Vec<Candidate<'a>> {
        names
            .iter()
            .zip(free)
            .map(|(n, f)| Candidate {
                name: n,
                host_id: n.split(':').next().unwrap_or(n),
                capacity: 100,
                free: *f,
            })
            .collect()
    }

    #[test]
    fn preferred_segments_come_first_and_nothing_repeats() {
        let c = cands(&["a:1", "b:1", "c:1"], &[10, 10, 10]);
        let pref = vec!["c:1".to_owned(), "zz".to_owned()];
        for strategy in [
            PlacementStrategy::Random,
            PlacementStrategy::FreeRatioFirst,
            PlacementStrategy::LocalFirst,
        ] {
            let o = strategy.order(
                &c,
                &PlacementRequest {
                    replicas: 2,
                    preferred: &pref,
                    writer_host: None,
                },
                &mut Rng::new(7),
            );
            assert_eq!(o[0], 2, "{strategy:?}");
            let mut s = o.clone();
            s.sort();
            s.dedup();
            assert_eq!(s, vec![0, 1, 2], "{strategy:?}: {o:?}");
        }
    }

    #[test]
    fn free_ratio_first_prefers_emptier_segments() {
        let c = cands(&["a:1", "b:1", "c:1"], &[10, 90, 50]);
        let o = PlacementStrategy::FreeRatioFirst.order(
            &c,
            &PlacementRequest {
                replicas: 1,
                ..Default::default()
            },
            &mut Rng::new(1),
        );
        assert_eq!(o, vec![1, 2, 0]);
    }

    #[test]
    fn local_first_prefers_the_writers_host() {
        let c = cands(&["a:1", "b:1", "b:2", "c:1"], &[1, 1, 1, 1]);
        for seed in 0..20 {
            let o = PlacementStrategy::LocalFirst.order(
                &c,
                &PlacementRequest {
                    replicas: 1,
                    preferred: &[],
                    writer_host: Some("b"),
                },
                &mut Rng::new(seed),
            );
            assert!(o[..2].contains(&1) && o[..2].contains(&2), "{o:?}");
        }
    }

    #[test]
    fn random_spreads_first_choices() {
        let c = cands(&["a:1", "b:1", "c:1", "d:1"], &[1; 4]);
        let mut rng = Rng::new(3);
        let mut firsts = [0; 4];
        for _ in 0..400 {
            firsts[PlacementStrategy::Random.order(
                &c,
                &PlacementRequest {
                    replicas: 1,
                    ..Default::default()
                },
                &mut rng,
            )[0]] += 1;
        }
        assert!(firsts.iter().all(|n| *n > 50), "{firsts:?}");
    }

    #[test]
    fn strategies_parse_from_flags() {
        assert_eq!(
            "free_ratio_first".parse::<PlacementStrategy>(),
            Ok(PlacementStrategy::FreeRatioFirst)
        );
        assert!("cxl"
            .parse::<PlacementStrategy>()
            .unwrap_err()
            .contains("unknown allocation strategy"));
    }
}
