use super::*;
use proptest::prelude::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Checks every internal invariant of `a` (address chain, coalescing, bins,
/// bitmaps, counters).
fn validate(a: &OffsetAllocator) {
    let slots: std::collections::HashSet<u32> = a.free_slots.iter().copied().collect();
    assert_eq!(slots.len(), a.free_slots.len(), "duplicate free slots");
    let live: Vec<u32> = (0..a.nodes.len() as u32)
        .filter(|i| !slots.contains(i))
        .collect();
    if a.capacity == 0 {
        assert!(live.is_empty());
        assert_eq!(a.used_bins_top, 0);
        return;
    }
    // Address chain: starts at offset 0, contiguous, ends at capacity.
    let heads: Vec<u32> = live
        .iter()
        .copied()
        .filter(|&i| a.nodes[i as usize].neighbor_prev == NIL)
        .collect();
    assert_eq!(heads.len(), 1, "exactly one first node");
    let (mut index, mut expect_offset, mut prev, mut prev_free) = (heads[0], 0u64, NIL, false);
    let (mut seen, mut used_bytes, mut used_count, mut free_nodes) = (0usize, 0u64, 0usize, 0usize);
    while index != NIL {
        let node = &a.nodes[index as usize];
        assert!(!slots.contains(&index), "chain reaches a released slot");
        assert_eq!(node.offset, expect_offset, "chain not contiguous");
        assert_eq!(node.neighbor_prev, prev);
        assert!(node.size > 0);
        if node.used {
            used_bytes += node.size;
            used_count += 1;
        } else {
            assert!(!prev_free, "two adjacent free nodes were not merged");
            free_nodes += 1;
        }
        prev_free = !node.used;
        expect_offset += node.size;
        prev = index;
        index = node.neighbor_next;
        seen += 1;
    }
    assert_eq!(expect_offset, a.capacity);
    assert_eq!(seen, live.len(), "unreachable live nodes");
    assert_eq!(used_bytes, a.allocated);
    assert_eq!(used_count, a.count);
    // Bins: every free node is in the bin of its rounded-down size.
    let mut in_bins = 0usize;
    for bin in 0..NUM_BINS {
        let top = bin >> MANTISSA_BITS;
        let bit = a.used_bins[top] & (1 << (bin & 7)) != 0;
        assert_eq!(bit, a.bin_heads[bin] != NIL, "leaf bitmap of bin {bin}");
        let (mut index, mut prev) = (a.bin_heads[bin], NIL);
        while index != NIL {
            let node = &a.nodes[index as usize];
            assert!(!node.used);
            assert_eq!(node.bin_prev, prev);
            assert_eq!(bin_round_down(node.size), bin);
            assert!(node.size >= bin_size(bin));
            in_bins += 1;
            prev = index;
            index = node.bin_next;
        }
    }
    for top in 0..NUM_TOP_BINS {
        assert_eq!(a.used_bins_top & (1 << top) != 0, a.used_bins[top] != 0);
    }
    assert_eq!(in_bins, free_nodes);
}

#[test]
fn small_float_classes() {
    for s in 0..8 {
        assert_eq!(OffsetAllocator::size_class_of(s), s);
    }
    assert_eq!(OffsetAllocator::size_class_of(9), 9);
    assert_eq!(OffsetAllocator::size_class_of(15), 15);
    assert_eq!(OffsetAllocator::size_class_of(17), 18);
    assert_eq!(OffsetAllocator::size_class_of(1000), 1024);
    assert_eq!(OffsetAllocator::size_class_of(64 * KIB), 64 * KIB);
    assert_eq!(OffsetAllocator::size_class_of(64 * KIB + 1), 72 * KIB);
    assert_eq!(OffsetAllocator::MAX_ALLOCATION_SIZE, 15 * GIB);
    assert_eq!(OffsetAllocator::size_class_of(15 * GIB), 15 * GIB);
    assert_eq!(OffsetAllocator::size_class_of(15 * GIB + 1), u64::MAX);
    assert_eq!(OffsetAllocator::size_class_of(u64::MAX), u64::MAX);
    for bin in 0..NUM_BINS {
        let size = bin_size(bin);
        assert_eq!(bin_round_up(size), bin);
        assert_eq!(bin_round_down(size), bin);
        if bin > 0 && bin < LAST_BIN {
            assert_eq!(bin_round_up(size + 1), bin + 1);
            assert_eq!(bin_round_down(bin_size(bin + 1) - 1), bin);
        }
    }
    assert_eq!(bin_round_down(u64::MAX), LAST_BIN);
    assert!(bin_round_up(u64::MAX) > LAST_BIN);
}

#[test]
fn alloc_free_coalesces_to_one_block() {
    let mut a = OffsetAllocator::new(MIB);
    let xs: Vec<Allocation> = (0..10).map(|_| a.allocate(4096).unwrap()).collect();
    for (i, x) in xs.iter().enumerate() {
        assert_eq!(x.offset, i as u64 * 4096);
        assert_eq!(x.size, 4096);
    }
    assert_eq!(a.allocated_bytes(), 40960);
    assert_eq!(a.free_bytes(), MIB - 40960);
    assert_eq!(a.allocation_count(), 10);
    assert_eq!(a.largest_free_block(), MIB - 40960);
    // Free in an order that exercises merge-left, merge-right and both.
    for &i in &[1, 3, 2, 0, 9, 5, 7, 6, 8, 4] {
        a.free(xs[i].handle).unwrap();
        validate(&a);
    }
    assert_eq!(a.largest_free_block(), MIB);
    assert_eq!(a.allocation_count(), 0);
    assert_eq!(a.allocated_bytes(), 0);
    // The hole left by a freed middle allocation is reused.
    let b: Vec<Allocation> = (0..3).map(|_| a.allocate(1000).unwrap()).collect();
    assert!(b.iter().all(|x| x.size == 1024));
    a.free(b[1].handle).unwrap();
    assert_eq!(a.allocate(1024).unwrap().offset, 1024);
    validate(&a);
}

#[test]
fn exact_capacity_when_class_size() {
    for cap in [1, 7, 8, 4096, 12 * GIB, 8 * GIB, 15 * GIB] {
        let mut a = OffsetAllocator::new(cap);
        let x = a.allocate(cap).expect("capacity is a class size");
        assert_eq!((x.offset, x.size), (0, cap));
        assert_eq!(a.largest_free_block(), 0);
        assert_eq!(a.allocate(1), None);
        a.free(x.handle).unwrap();
        assert_eq!(a.largest_free_block(), cap);
    }
    // 1000 is not a class: the request rounds up to 1024 and fails, even though
    // 1000 <= largest_free_block(); the largest class below it fits.
    let mut a = OffsetAllocator::new(1000);
    assert_eq!(a.allocate(1000), None);
    assert_eq!(a.allocate(960).unwrap().size, 960);
    validate(&a);
}

#[test]
fn double_free_and_stale_handles_are_rejected() {
    let mut a = OffsetAllocator::new(MIB);
    let x = a.allocate(100).unwrap();
    a.free(x.handle).unwrap();
    assert_eq!(a.free(x.handle), Err(FreeError::UnknownHandle));
    // The node slot is reused by the next allocation; the old handle stays dead.
    let y = a.allocate(100).unwrap();
    assert_eq!(y.offset, x.offset);
    assert_ne!(y.handle, x.handle);
    assert_eq!(a.free(x.handle), Err(FreeError::UnknownHandle));
    assert_eq!(a.allocation_count(), 1);
    a.free(y.handle).unwrap();
    assert_eq!(a.free(y.handle), Err(FreeError::UnknownHandle));
    // A handle to a slot that is now a free block, or out of range entirely.
    let mut other = OffsetAllocator::new(MIB);
    let held: Vec<Allocation> = (0..50).map(|_| other.allocate(8).unwrap()).collect();
    for h in &held {
        assert_eq!(a.free(h.handle), Err(FreeError::UnknownHandle));
    }
    assert_eq!(
        OffsetAllocator::new(0).free(held[0].handle),
        Err(FreeError::UnknownHandle)
    );
    validate(&a);
    let err = FreeError::UnknownHandle;
    assert_eq!(
        err.to_string(),
        "unknown or already freed allocation handle"
    );
    let _: &dyn std::error::Error = &err;
}

#[test]
fn zero_and_too_large_requests() {
    let mut a = OffsetAllocator::new(64 * GIB);
    assert_eq!(a.allocate(0), None);
    assert_eq!(a.allocate(OffsetAllocator::MAX_ALLOCATION_SIZE + 1), None);
    assert_eq!(a.allocate(u64::MAX), None);
    assert_eq!(a.allocate(65 * GIB), None);
    let x = a.allocate(OffsetAllocator::MAX_ALLOCATION_SIZE).unwrap();
    assert_eq!(x.size, 15 * GIB);
    assert_eq!(a.allocation_count(), 1);
    let mut empty = OffsetAllocator::new(0);
    assert_eq!(empty.allocate(1), None);
    assert_eq!(empty.largest_free_block(), 0);
    assert_eq!(empty.free_bytes(), 0);
    assert_eq!(empty.capacity(), 0);
    validate(&empty);
    let mut small = OffsetAllocator::new(100);
    assert_eq!(small.allocate(200), None);
    validate(&small);
}

#[test]
fn one_tib_segment_of_16_mib_objects() {
    let mut a = OffsetAllocator::new(TIB);
    let mut xs = Vec::new();
    while let Some(x) = a.allocate(16 * MIB) {
        assert_eq!(x.size, 16 * MIB);
        xs.push(x);
    }
    assert_eq!(xs.len() as u64, TIB / (16 * MIB));
    assert!(xs.iter().any(|x| x.offset > u64::from(u32::MAX)));
    let mut offsets: Vec<u64> = xs.iter().map(|x| x.offset).collect();
    offsets.sort_unstable();
    assert!(offsets
        .iter()
        .enumerate()
        .all(|(i, &o)| o == i as u64 * 16 * MIB));
    assert_eq!(a.free_bytes(), 0);
    assert_eq!(a.largest_free_block(), 0);
    validate(&a);
    // Free every other object, then the rest.
    for x in xs.iter().step_by(2) {
        a.free(x.handle).unwrap();
    }
    assert_eq!(a.largest_free_block(), 16 * MIB);
    for x in xs.iter().skip(1).step_by(2) {
        a.free(x.handle).unwrap();
    }
    assert_eq!(a.largest_free_block(), TIB);
    assert_eq!(a.allocation_count(), 0);
    validate(&a);
}

#[test]
fn huge_capacity_u64_max() {
    let mut a = OffsetAllocator::new(u64::MAX);
    let x = a.allocate(OffsetAllocator::MAX_ALLOCATION_SIZE).unwrap();
    let y = a.allocate(3).unwrap();
    assert_eq!(y.offset, x.size);
    assert_eq!(a.largest_free_block(), u64::MAX - x.size - 3);
    a.free(x.handle).unwrap();
    a.free(y.handle).unwrap();
    assert_eq!(a.largest_free_block(), u64::MAX);
    validate(&a);
}

#[test]
fn aligned_requests_give_aligned_offsets() {
    let mut a = OffsetAllocator::new(GIB);
    let mut seed = 0x1234_5678_u64;
    let mut live = Vec::new();
    for i in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if i % 3 == 2 && !live.is_empty() {
            let x: Allocation = live.swap_remove(seed as usize % live.len());
            a.free(x.handle).unwrap();
        } else if let Some(x) = a.allocate((seed % 4096 + 1) * 64) {
            assert_eq!(x.offset % 64, 0);
            assert_eq!(x.size % 64, 0);
            live.push(x);
        }
    }
    validate(&a);
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(u64),
    Free(usize),
}

/// Runs `ops` against a fresh allocator, checking it after every step against
/// a model (the list of live allocations), then frees everything.
fn run_ops(capacity: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut a = OffsetAllocator::new(capacity);
    let mut live: Vec<Allocation> = Vec::new();
    let mut dead: Vec<AllocHandle> = Vec::new();
    for op in ops {
        match *op {
            Op::Alloc(size) => {
                let class = OffsetAllocator::size_class_of(size);
                let should_fit = class <= a.largest_free_block() && size > 0;
                let got = a.allocate(size);
                prop_assert_eq!(got.is_some(), should_fit, "size {} class {}", size, class);
                if let Some(x) = got {
                    prop_assert_eq!(x.size, class);
                    prop_assert!(x.size >= size && x.size - size <= size / 8);
                    live.push(x);
                }
            }
            Op::Free(pick) => {
                if live.is_empty() {
                    if let Some(&h) = dead.last() {
                        prop_assert_eq!(a.free(h), Err(FreeError::UnknownHandle));
                    }
                } else {
                    let x = live.swap_remove(pick % live.len());
                    prop_assert_eq!(a.free(x.handle), Ok(()));
                    prop_assert_eq!(a.free(x.handle), Err(FreeError::UnknownHandle));
                    dead.push(x.handle);
                }
            }
        }
        // Model checks: in range, no overlap, counters, exact largest gap.
        let mut sorted: Vec<(u64, u64)> = live.iter().map(|x| (x.offset, x.size)).collect();
        sorted.sort_unstable();
        let (mut end, mut largest_gap, mut sum) = (0u64, 0u64, 0u64);
        for &(offset, size) in &sorted {
            prop_assert!(offset >= end, "overlap at {}", offset);
            prop_assert!(offset.checked_add(size).is_some_and(|e| e <= capacity));
            largest_gap = largest_gap.max(offset - end);
            end = offset + size;
            sum += size;
        }
        largest_gap = largest_gap.max(capacity - end);
        prop_assert_eq!(a.allocated_bytes(), sum);
        prop_assert_eq!(a.free_bytes(), capacity - sum);
        prop_assert_eq!(a.allocation_count(), live.len());
        prop_assert_eq!(a.largest_free_block(), largest_gap);
        validate(&a);
    }
    // Stale handles stay dead even after their slots were reused.
    for &h in &dead {
        prop_assert_eq!(a.free(h), Err(FreeError::UnknownHandle));
    }
    for x in live.drain(..) {
        prop_assert_eq!(a.free(x.handle), Ok(()));
    }
    prop_assert_eq!(a.largest_free_block(), capacity);
    prop_assert_eq!(a.allocation_count(), 0);
    prop_assert_eq!(a.allocated_bytes(), 0);
    validate(&a);
    Ok(())
}

fn big_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (1..=2 * MIB).prop_map(Op::Alloc),
        1 => (1..=64 * GIB).prop_map(Op::Alloc),
        1 => any::<u64>().prop_map(Op::Alloc),
        8 => any::<usize>().prop_map(Op::Free),
    ]
}

fn small_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..=300u64).prop_map(Op::Alloc),
        2 => any::<usize>().prop_map(Op::Free),
    ]
}

/// Log-uniform capacity in `[1 MiB, 64 GiB)`.
fn big_capacity() -> impl Strategy<Value = u64> {
    (20u32..36, any::<u64>()).prop_map(|(e, r)| (1u64 << e) + r % (1u64 << e))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_ops_large_segments(
        capacity in big_capacity(),
        ops in proptest::collection::vec(big_op(), 1..300),
    ) {
        run_ops(capacity, &ops)?;
    }

    #[test]
    fn random_ops_tiny_segments(
        capacity in 0..=4096u64,
        ops in proptest::collection::vec(small_op(), 1..300),
    ) {
        run_ops(capacity, &ops)?;
    }

    #[test]
    fn size_class_properties(a in 1..=OffsetAllocator::MAX_ALLOCATION_SIZE,
                             b in 1..=OffsetAllocator::MAX_ALLOCATION_SIZE) {
        let (ca, cb) = (OffsetAllocator::size_class_of(a), OffsetAllocator::size_class_of(b));
        prop_assert!(ca >= a && ca - a <= a / 8);
        prop_assert_eq!(OffsetAllocator::size_class_of(ca), ca);
        if a <= b { prop_assert!(ca <= cb); }
    }
}

#[test]
fn from_occupied_rebuilds_the_same_layout_and_frees_merge() {
    let mut a = OffsetAllocator::new(MIB);
    let x = a.allocate(100 * KIB).unwrap();
    let y = a.allocate(3 * KIB).unwrap();
    let z = a.allocate(200 * KIB).unwrap();
    a.free(y.handle).unwrap();
    // Given in any order, with requested (not rounded) sizes.
    let (mut b, got) =
        OffsetAllocator::from_occupied(MIB, &[(z.offset, 200 * KIB), (x.offset, 100 * KIB)]);
    validate(&b);
    let (bz, bx) = (got[0].unwrap(), got[1].unwrap());
    assert_eq!((bz.offset, bz.size), (z.offset, z.size));
    assert_eq!((bx.offset, bx.size), (x.offset, x.size));
    assert_eq!(b.allocated_bytes(), a.allocated_bytes());
    assert_eq!(b.largest_free_block(), a.largest_free_block());
    assert_eq!(b.allocation_count(), 2);
    // The gap left by `y` is free again, and freeing merges back to one block.
    assert_eq!(b.allocate(3 * KIB).unwrap().offset, y.offset);
    b.free(bx.handle).unwrap();
    assert_eq!(b.free(bx.handle), Err(FreeError::UnknownHandle));
    validate(&b);
}

#[test]
fn from_occupied_refuses_overlaps_and_out_of_range() {
    let (a, got) = OffsetAllocator::from_occupied(
        64 * KIB,
        &[
            (0, 8 * KIB),
            (4 * KIB, KIB),       // overlaps the first
            (0, 2 * KIB),         // same offset: the earlier one wins
            (60 * KIB, 8 * KIB),  // runs past the end
            (u64::MAX - 1, 4),    // overflows
            (16 * KIB, 0),        // empty
            (16 * KIB, 16 * GIB), // larger than any class
            (32 * KIB, 32 * KIB), // exactly up to the end
        ],
    );
    let ok: Vec<bool> = got.iter().map(Option::is_some).collect();
    assert_eq!(ok, [true, false, false, false, false, false, false, true]);
    assert_eq!(a.allocated_bytes(), 40 * KIB);
    assert_eq!(a.largest_free_block(), 24 * KIB);
    validate(&a);
    let (empty, none) = OffsetAllocator::from_occupied(0, &[(0, 1)]);
    assert_eq!(none, [None]);
    validate(&empty);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random allocations and frees, then a rebuild from the live ranges: same ranges, same
    /// free space, and the rebuilt allocator keeps working (checked like `run_ops`).
    #[test]
    fn from_occupied_matches_a_live_allocator(
        capacity in big_capacity(),
        ops in proptest::collection::vec(big_op(), 1..200),
        after in proptest::collection::vec(big_op(), 1..200),
    ) {
        let mut a = OffsetAllocator::new(capacity);
        let mut live: Vec<Allocation> = Vec::new();
        for op in &ops {
            match *op {
                Op::Alloc(size) => live.extend(a.allocate(size)),
                Op::Free(pick) if !live.is_empty() => {
                    let x = live.swap_remove(pick % live.len());
                    a.free(x.handle).unwrap();
                }
                Op::Free(_) => {}
            }
        }
        let ranges: Vec<(u64, u64)> = live.iter().map(|x| (x.offset, x.size)).collect();
        let (mut b, got) = OffsetAllocator::from_occupied(capacity, &ranges);
        validate(&b);
        for (x, y) in live.iter().zip(&got) {
            let y = y.expect("a live range is restored");
            prop_assert_eq!((x.offset, x.size), (y.offset, y.size));
        }
        prop_assert_eq!(b.allocated_bytes(), a.allocated_bytes());
        prop_assert_eq!(b.largest_free_block(), a.largest_free_block());
        let mut restored: Vec<Allocation> = got.into_iter().flatten().collect();
        for op in &after {
            match *op {
                Op::Alloc(size) => {
                    let fits = size > 0
                        && OffsetAllocator::size_class_of(size) <= b.largest_free_block();
                    let x = b.allocate(size);
                    prop_assert_eq!(x.is_some(), fits);
                    restored.extend(x);
                }
                Op::Free(pick) if !restored.is_empty() => {
                    let x = restored.swap_remove(pick % restored.len());
                    prop_assert_eq!(b.free(x.handle), Ok(()));
                }
                Op::Free(_) => {}
            }
            validate(&b);
        }
        for x in restored {
            prop_assert_eq!(b.free(x.handle), Ok(()));
        }
        prop_assert_eq!(b.largest_free_block(), capacity);
        validate(&b);
    }
}
