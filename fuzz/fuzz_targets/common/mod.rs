//! Shared input vocabulary of the master targets: numbers that reach both small and huge
//! values, keys and segment names drawn mostly from small pools (so operations meet each
//! other) but sometimes arbitrary, and the `Segment` / `ReplicateConfig` built from them.
#![allow(dead_code)]

use arbitrary::Arbitrary;
use mooncake_store::{ClientId, Pin, ReplicateConfig, Segment, SegmentId, TaskId};

/// A number: small, medium, a power of two (2**40 and the like in one byte), the
/// extremes, or any u64.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Num {
    Small(u8),
    Medium(u16),
    Kib(u16),
    Pow2(u8),
    Pow2Minus1(u8),
    Max,
    Any(u64),
}

impl Num {
    pub fn get(self) -> u64 {
        match self {
            Num::Small(v) => u64::from(v),
            Num::Medium(v) => u64::from(v),
            Num::Kib(v) => u64::from(v) << 10,
            Num::Pow2(s) => 1u64 << (s % 64),
            Num::Pow2Minus1(s) => (1u64 << (s % 64)).wrapping_sub(1),
            Num::Max => u64::MAX,
            Num::Any(v) => v,
        }
    }
}

pub const KEYS: [&str; 8] = ["k0", "k1", "k2", "k3", "a/b", "k0k0", "longer-key", "\u{e9}"];
pub const NAMES: [&str; 5] = ["s0", "s1", "s2", "s3", "127.0.0.1:1"];

#[derive(Debug, Clone, Arbitrary)]
pub enum KeyChoice {
    Pool(u8),
    Empty,
    /// Longer than `MAX_KEY_LEN`.
    TooLong(u16),
    Any(String),
}

impl KeyChoice {
    pub fn get(&self) -> String {
        match self {
            KeyChoice::Pool(i) => KEYS[*i as usize % KEYS.len()].to_owned(),
            KeyChoice::Empty => String::new(),
            KeyChoice::TooLong(n) => "k".repeat(4096 + usize::from(*n % 4)),
            KeyChoice::Any(s) => s.clone(),
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub enum NameChoice {
    Pool(u8),
    Empty,
    Any(String),
}

impl NameChoice {
    pub fn get(&self) -> String {
        match self {
            NameChoice::Pool(i) => NAMES[*i as usize % NAMES.len()].to_owned(),
            NameChoice::Empty => String::new(),
            NameChoice::Any(s) => s.clone(),
        }
    }
}

pub fn names(v: &[NameChoice]) -> Vec<String> {
    v.iter().take(16).map(NameChoice::get).collect()
}

pub fn keys(v: &[KeyChoice]) -> Vec<String> {
    v.iter().take(64).map(KeyChoice::get).collect()
}

pub fn client(c: u8) -> ClientId {
    ClientId(u128::from(c % 4) + 1)
}

pub fn segment_id(s: u8) -> SegmentId {
    SegmentId(u128::from(s % 8) + 100)
}

#[derive(Debug, Clone, Arbitrary)]
pub struct SegSpec {
    pub id: u8,
    pub name: NameChoice,
    pub base: Num,
    pub size: Num,
    pub host: u8,
    pub durable: bool,
}

impl SegSpec {
    pub fn get(&self) -> Segment {
        let name = self.name.get();
        Segment {
            id: segment_id(self.id),
            te_endpoint: name.clone(),
            name,
            base: self.base.get(),
            size: self.size.get(),
            protocol: "tcp".to_owned(),
            host_id: format!("host{}", self.host % 3),
            durable: self.durable,
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub struct Cfg {
    pub replica_num: Num,
    pub pin: u8,
    pub preferred: Vec<NameChoice>,
    pub same_node: bool,
    pub excluded: Vec<NameChoice>,
    pub soft_pin_ttl_ms: Option<Num>,
}

impl Cfg {
    pub fn get(&self) -> ReplicateConfig {
        ReplicateConfig {
            replica_num: self.replica_num.get() as usize,
            pin: match self.pin % 3 {
                0 => Pin::None,
                1 => Pin::Soft,
                _ => Pin::Hard,
            },
            preferred_segments: names(&self.preferred),
            prefer_alloc_in_same_node: self.same_node,
            excluded_segments: names(&self.excluded),
            soft_pin_ttl_ms: self.soft_pin_ttl_ms.map(Num::get),
            // Fields added later (e.g. `checksum`) keep their defaults.
            ..ReplicateConfig::default()
        }
    }
}

/// A task or drain-job id: one handed out earlier in the run, or any.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum IdChoice {
    Known(u8),
    Any(u128),
}

impl IdChoice {
    pub fn get(self, known: &[TaskId]) -> TaskId {
        match self {
            IdChoice::Known(i) if !known.is_empty() => known[i as usize % known.len()],
            IdChoice::Known(i) => TaskId(u128::from(i)),
            IdChoice::Any(v) => TaskId(v),
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub enum Pattern {
    Pool(u8),
    Any(String),
}

impl Pattern {
    pub fn get(&self) -> String {
        const P: [&str; 6] = ["^k", "k[0-3]$", ".*", "(", "", "a/.+"];
        match self {
            Pattern::Pool(i) => P[*i as usize % P.len()].to_owned(),
            Pattern::Any(s) => s.chars().take(64).collect(),
        }
    }
}
