//! Criterion benchmarks of the Mooncake cores live beside this file; run them with
//! `cargo bench -p mooncake-benches`.
