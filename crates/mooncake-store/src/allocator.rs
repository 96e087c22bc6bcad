//! Bin-based O(1) offset allocator for memory segments.
//!
//! This is a Rust take on the two-level segregated-fit allocator from
//! Sebastian Aaltonen's `OffsetAllocator`, in the variant Mooncake's master
//! uses for its segments: requests are rounded *up* to their size class, so a
//! freed block that cannot be merged goes back into exactly the bin it came
//! from instead of a smaller one.
//!
//! # Size classes
//!
//! Sizes are mapped to one of 256 bins with a tiny floating-point encoding:
//! 5 exponent bits (32 *top* bins) and 3 mantissa bits (8 *leaf* bins per top
//! bin). Bins `0..8` are the exact sizes `0..8`; above that each power-of-two
//! range `[2^k, 2^(k+1))` is split into 8 equal steps, so rounding a request up
//! to its class wastes less than 12.5 % of it. Free blocks are filed under the
//! bin of their size rounded *down*, which guarantees that every block in bin
//! `b` is at least `class(b)` bytes long. A 32-bit mask of non-empty top bins
//! and one 8-bit mask per top bin make "find the first non-empty bin `>= b`" a
//! couple of bit scans, so `allocate` and `free` are O(1).
//!
//! # Units: u64 bytes, granularity 1
//!
//! Offsets and sizes are plain `u64` byte counts; there is no internal
//! granularity or per-segment multiplier (Mooncake's C++ keeps `u32` offsets
//! and shifts them by a per-segment `multiplier_bits`). Consequences:
//!
//! * a segment can be any size up to `u64::MAX` bytes (1 TiB and beyond is
//!   fine) and no capacity is lost to a quantum;
//! * [`OffsetAllocator::size_class_of`] does not depend on the segment, so it
//!   is an associated function;
//! * the largest class, and so the largest single allocation, is
//!   [`OffsetAllocator::MAX_ALLOCATION_SIZE`] = 15 GiB (`15 << 30`); larger
//!   requests return `None`. Free blocks of 15 GiB or more all share the top
//!   bin, which is still correct because each of them fits any request;
//! * offsets carry no alignment of their own, but if every request is a
//!   multiple of a power of two `A`, every class, and so every offset, is a
//!   multiple of `A` too (round requests up to `A` to get aligned offsets).
//!
//! # Rounding guarantee
//!
//! `allocate(size)` succeeds **if and only if** `0 < size <=
//! MAX_ALLOCATION_SIZE` and some free block is at least
//! `size_class_of(size)` bytes long, i.e. `size_class_of(size) <=
//! largest_free_block()`. A request with `size <= largest_free_block()` can
//! therefore fail only because of class rounding. When the whole segment is
//! free, a request of exactly `capacity` bytes succeeds when `capacity` is
//! itself a class size (e.g. any power of two up to 8 GiB, or 12 GiB).
//!
//! # Handles
//!
//! An [`AllocHandle`] is a node index plus a generation. A node's generation
//! is bumped every time it is freed and never decreases, so a handle that was
//! already freed (even if its node was since reused) or that belongs to some
//! other allocator is rejected with [`FreeError::UnknownHandle`]. No call
//! sequence panics.
#![forbid(unsafe_code)]

use std::fmt;

/// Number of mantissa bits of the small-float size encoding.
const MANTISSA_BITS: u32 = 3;
/// `1 << MANTISSA_BITS`: sizes below this are their own (denormal) class.
const MANTISSA_VALUE: u64 = 1 << MANTISSA_BITS;
/// Mask of the mantissa bits.
const MANTISSA_MASK: u64 = MANTISSA_VALUE - 1;
/// Number of top-level bins (exponents).
const NUM_TOP_BINS: usize = 32;
/// Total number of bins (size classes).
const NUM_BINS: usize = NUM_TOP_BINS << MANTISSA_BITS;
/// Index of the last bin; also the catch-all for very large free blocks.
const LAST_BIN: usize = NUM_BINS - 1;
/// Sentinel node index ("no node").
const NIL: u32 = u32::MAX;
/// Maximum number of node slots (every index must differ from `NIL`).
const MAX_NODES: usize = NIL as usize;

/// Bin of `size` rounded up: the smallest class `>= size`. May exceed
/// [`LAST_BIN`] for sizes above the largest class.
fn bin_round_up(size: u64) -> usize {
    if size < MANTISSA_VALUE {
        return size as usize;
    }
    let highest_bit = 63 - size.leading_zeros();
    let shift = highest_bit - MANTISSA_BITS;
    let mantissa = ((size >> shift) & MANTISSA_MASK) as usize;
    // `+` (not `|`) lets a mantissa overflow carry into the exponent.
    let bin = (((shift + 1) as usize) << MANTISSA_BITS) + mantissa;
    if size & ((1u64 << shift) - 1) != 0 {
        bin + 1
    } else {
        bin
    }
}

/// Bin of `size` rounded down (the largest class `<= size`), clamped to
/// [`LAST_BIN`].
fn bin_round_down(size: u64) -> usize {
    if size < MANTISSA_VALUE {
        return size as usize;
    }
    let highest_bit = 63 - size.leading_zeros();
    let shift = highest_bit - MANTISSA_BITS;
    let mantissa = ((size >> shift) & MANTISSA_MASK) as usize;
    let bin = (((shift + 1) as usize) << MANTISSA_BITS) | mantissa;
    bin.min(LAST_BIN)
}

/// Size in bytes of class `bin` (`bin <= LAST_BIN`).
const fn bin_size(bin: usize) -> u64 {
    let exponent = (bin >> MANTISSA_BITS) as u32;
    let mantissa = (bin as u64) & MANTISSA_MASK;
    if exponent == 0 {
        mantissa
    } else {
        (mantissa | MANTISSA_VALUE) << (exponent - 1)
    }
}

/// Handle of one allocation: a node index and a generation, so that stale
/// handles (already freed, or freed and the node reused) are detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllocHandle {
    index: u32,
    generation: u64,
}

/// A successful allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// Handle to pass to [`OffsetAllocator::free`].
    pub handle: AllocHandle,
    /// Start of the reserved range, in bytes from the segment start.
    pub offset: u64,
    /// Size actually reserved: the request rounded up to its size class
    /// (see [`OffsetAllocator::size_class_of`]).
    pub size: u64,
}

/// Error returned by [`OffsetAllocator::free`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeError {
    /// The handle does not name a live allocation of this allocator: it was
    /// already freed, or it comes from another allocator.
    UnknownHandle,
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownHandle => f.write_str("unknown or already freed allocation handle"),
        }
    }
}

impl std::error::Error for FreeError {}

/// One contiguous range of the segment, either allocated or free.
///
/// All nodes form a doubly linked list in address order (`neighbor_*`); free
/// nodes are additionally linked into the list of their bin (`bin_*`).
#[derive(Debug, Clone)]
struct Node {
    offset: u64,
    size: u64,
    /// Bumped whenever the node is freed; never decreases, survives slot reuse.
    generation: u64,
    bin_prev: u32,
    bin_next: u32,
    neighbor_prev: u32,
    neighbor_next: u32,
    used: bool,
}

/// Bin-based O(1) offset allocator over the byte range `[0, capacity)`.
///
/// See the [module documentation](self) for the size classes, the `u64`
/// units and the exact success condition of [`allocate`](Self::allocate).
#[derive(Debug, Clone)]
pub struct OffsetAllocator {
    capacity: u64,
    allocated: u64,
    count: usize,
    /// Bit `t` set iff some leaf bin of top bin `t` is non-empty.
    used_bins_top: u32,
    /// Bit `l` of entry `t` set iff bin `t * 8 + l` is non-empty.
    used_bins: [u8; NUM_TOP_BINS],
    /// Head of each bin's free list, or `NIL`.
    bin_heads: [u32; NUM_BINS],
    nodes: Vec<Node>,
    /// Unused node slots (a stack).
    free_slots: Vec<u32>,
}

impl OffsetAllocator {
    /// Largest size class, and so the largest request that can ever succeed:
    /// 15 GiB.
    pub const MAX_ALLOCATION_SIZE: u64 = bin_size(LAST_BIN);

    /// Creates an allocator whose whole range `[0, capacity)` is free.
    ///
    /// `capacity` may be 0, in which case every allocation fails.
    pub fn new(capacity: u64) -> Self {
        let mut allocator = Self {
            capacity,
            allocated: 0,
            count: 0,
            used_bins_top: 0,
            used_bins: [0; NUM_TOP_BINS],
            bin_heads: [NIL; NUM_BINS],
            nodes: Vec::new(),
            free_slots: Vec::new(),
        };
        if capacity > 0 {
            allocator.nodes.push(Node {
                offset: 0,
                size: capacity,
                generation: 0,
                bin_prev: NIL,
                bin_next: NIL,
                neighbor_prev: NIL,
                neighbor_next: NIL,
                used: false,
            });
            allocator.link_into_bin(0);
        }
        allocator
    }

    /// The rounded size that a request of `size` bytes reserves.
    ///
    /// Returns 0 for `size == 0` and `u64::MAX` for sizes above
    /// [`MAX_ALLOCATION_SIZE`](Self::MAX_ALLOCATION_SIZE); both kinds of
    /// request make [`allocate`](Self::allocate) return `None`. Otherwise the
    /// result is the smallest class `>= size`, less than `size + size / 8 + 1`.
    pub fn size_class_of(size: u64) -> u64 {
        if size > Self::MAX_ALLOCATION_SIZE {
            u64::MAX
        } else {
            bin_size(bin_round_up(size))
        }
    }

    /// Reserves `size` bytes rounded up to their class and returns where.
    ///
    /// Returns `None` when `size` is 0, when it exceeds
    /// [`MAX_ALLOCATION_SIZE`](Self::MAX_ALLOCATION_SIZE), or when no free
    /// block is at least [`size_class_of(size)`](Self::size_class_of) long.
    /// In particular a request with `size <= largest_free_block()` fails only
    /// if rounding it up to its class makes it larger than every free block.
    /// Runs in O(1).
    pub fn allocate(&mut self, size: u64) -> Option<Allocation> {
        if size == 0 || size > Self::MAX_ALLOCATION_SIZE {
            return None;
        }
        let min_bin = bin_round_up(size);
        let class = bin_size(min_bin);
        let bin = self.find_non_empty_bin(min_bin)?;
        let index = self.bin_heads[bin];
        let node = &self.nodes[index as usize];
        let remainder = node.size - class;
        if remainder > 0 && self.free_slots.is_empty() && self.nodes.len() >= MAX_NODES {
            // No slot for the remainder node; unreachable in practice.
            return None;
        }
        self.unlink_from_bin(index);
        let node = &mut self.nodes[index as usize];
        node.used = true;
        node.size = class;
        let offset = node.offset;
        let generation = node.generation;
        let old_next = node.neighbor_next;
        if remainder > 0 {
            let split = self.take_slot(Node {
                offset: offset + class,
                size: remainder,
                generation: 0,
                bin_prev: NIL,
                bin_next: NIL,
                neighbor_prev: index,
                neighbor_next: old_next,
                used: false,
            });
            if old_next != NIL {
                self.nodes[old_next as usize].neighbor_prev = split;
            }
            self.nodes[index as usize].neighbor_next = split;
            self.link_into_bin(split);
        }
        self.allocated += class;
        self.count += 1;
        Some(Allocation {
            handle: AllocHandle { index, generation },
            offset,
            size: class,
        })
    }

    /// Releases an allocation and merges it with free neighbours. O(1).
    ///
    /// Returns [`FreeError::UnknownHandle`] (and changes nothing) if `handle`
    /// is not a live allocation of this allocator, e.g. on a double free.
    pub fn free(&mut self, handle: AllocHandle) -> Result<(), FreeError> {
        let index = handle.index;
        let node = match self.nodes.get_mut(index as usize) {
            Some(node) if node.used && node.generation == handle.generation => node,
            _ => return Err(FreeError::UnknownHandle),
        };
        node.used = false;
        node.generation = node.generation.wrapping_add(1);
        self.allocated -= node.size;
        self.count -= 1;
        let prev = node.neighbor_prev;
        let next = node.neighbor_next;

        if prev != NIL && !self.nodes[prev as usize].used {
            self.unlink_from_bin(prev);
            let prev_node = &self.nodes[prev as usize];
            let (prev_offset, prev_size, prev_prev) =
                (prev_node.offset, prev_node.size, prev_node.neighbor_prev);
            let node = &mut self.nodes[index as usize];
            node.offset = prev_offset;
            node.size += prev_size;
            node.neighbor_prev = prev_prev;
            if prev_prev != NIL {
                self.nodes[prev_prev as usize].neighbor_next = index;
            }
            self.release_slot(prev);
        }
        if next != NIL && !self.nodes[next as usize].used {
            self.unlink_from_bin(next);
            let next_node = &self.nodes[next as usize];
            let (next_size, next_next) = (next_node.size, next_node.neighbor_next);
            let node = &mut self.nodes[index as usize];
            node.size += next_size;
            node.neighbor_next = next_next;
            if next_next != NIL {
                self.nodes[next_next as usize].neighbor_prev = index;
            }
            self.release_slot(next);
        }
        self.link_into_bin(index);
        Ok(())
    }

    /// Rebuilds an allocator whose live allocations are exactly `ranges`
    /// (`(offset, requested size)` pairs, in any order), e.g. to restore a
    /// segment's replicas at the offsets they had. Each size is rounded up to
    /// its class, as [`allocate`](Self::allocate) would have reserved it, and
    /// the gaps between the ranges become free blocks, so freeing a restored
    /// allocation merges with its neighbours as usual. Runs in O(n log n).
    ///
    /// Returns one entry per range, in input order: `None` for a range that is
    /// empty, larger than [`MAX_ALLOCATION_SIZE`](Self::MAX_ALLOCATION_SIZE),
    /// outside `[0, capacity)` or overlapping a range at a lower offset (of two
    /// ranges at the same offset the earlier one in `ranges` wins).
    pub fn from_occupied(capacity: u64, ranges: &[(u64, u64)]) -> (Self, Vec<Option<Allocation>>) {
        let mut order: Vec<usize> = (0..ranges.len()).collect();
        order.sort_by_key(|&i| ranges[i].0);
        let mut out = vec![None; ranges.len()];
        let mut allocator = Self::new(0);
        allocator.capacity = capacity;
        let mut cursor = 0u64;
        let mut last = NIL;
        for i in order {
            let (offset, size) = ranges[i];
            let class = Self::size_class_of(size);
            let fits = size > 0
                && class != u64::MAX
                && offset >= cursor
                && offset.checked_add(class).is_some_and(|end| end <= capacity);
            if !fits {
                continue;
            }
            if offset > cursor {
                last = allocator.push_chained(last, cursor, offset - cursor, false);
            }
            last = allocator.push_chained(last, offset, class, true);
            allocator.allocated += class;
            allocator.count += 1;
            cursor = offset + class;
            out[i] = Some(Allocation {
                handle: AllocHandle {
                    index: last,
                    generation: 0,
                },
                offset,
                size: class,
            });
        }
        if cursor < capacity {
            allocator.push_chained(last, cursor, capacity - cursor, false);
        }
        (allocator, out)
    }

    /// Appends a node after `prev` in address order (a free one also goes into its bin)
    /// and returns its index. Only [`from_occupied`](Self::from_occupied) builds chains
    /// this way, from offset 0 upwards.
    fn push_chained(&mut self, prev: u32, offset: u64, size: u64, used: bool) -> u32 {
        // Node indices stay below `NIL`: a segment would need 2^32 allocations, far more
        // than the memory the node vector itself would take.
        let index = self.nodes.len() as u32;
        self.nodes.push(Node {
            offset,
            size,
            generation: 0,
            bin_prev: NIL,
            bin_next: NIL,
            neighbor_prev: prev,
            neighbor_next: NIL,
            used,
        });
        if prev != NIL {
            self.nodes[prev as usize].neighbor_next = index;
        }
        if !used {
            self.link_into_bin(index);
        }
        index
    }

    /// Total size of the managed range in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Sum of the reserved (class-rounded) sizes of all live allocations.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated
    }

    /// `capacity() - allocated_bytes()`: free bytes, possibly fragmented.
    pub fn free_bytes(&self) -> u64 {
        self.capacity - self.allocated
    }

    /// Exact size of the largest contiguous free range (0 if none).
    ///
    /// Takes O(k) for the k free blocks in the highest non-empty bin (all of
    /// which are within 12.5 % of each other in size, or at least 15 GiB).
    pub fn largest_free_block(&self) -> u64 {
        if self.used_bins_top == 0 {
            return 0;
        }
        let top = (31 - self.used_bins_top.leading_zeros()) as usize;
        let leaf = (7 - self.used_bins[top].leading_zeros()) as usize;
        let mut index = self.bin_heads[(top << MANTISSA_BITS) | leaf];
        let mut largest = 0;
        while index != NIL {
            let node = &self.nodes[index as usize];
            largest = largest.max(node.size);
            index = node.bin_next;
        }
        largest
    }

    /// Number of live allocations.
    pub fn allocation_count(&self) -> usize {
        self.count
    }

    /// First non-empty bin with index `>= min_bin` (`min_bin <= LAST_BIN`).
    fn find_non_empty_bin(&self, min_bin: usize) -> Option<usize> {
        let top = min_bin >> MANTISSA_BITS;
        let leaf = (min_bin as u32) & MANTISSA_MASK as u32;
        if self.used_bins_top & (1 << top) != 0 {
            let leaves = u32::from(self.used_bins[top]) & (u32::MAX << leaf);
            if leaves != 0 {
                return Some((top << MANTISSA_BITS) | leaves.trailing_zeros() as usize);
            }
        }
        // Every bin of a higher top bin fits, since `min_bin` was rounded up.
        let next_top = top + 1;
        if next_top >= NUM_TOP_BINS {
            return None;
        }
        let tops = self.used_bins_top & (u32::MAX << next_top);
        if tops == 0 {
            return None;
        }
        let top = tops.trailing_zeros() as usize;
        let leaf = self.used_bins[top].trailing_zeros() as usize;
        Some((top << MANTISSA_BITS) | leaf)
    }

    /// Pushes free node `index` onto the list of the bin of its size.
    fn link_into_bin(&mut self, index: u32) {
        let bin = bin_round_down(self.nodes[index as usize].size);
        let head = self.bin_heads[bin];
        let node = &mut self.nodes[index as usize];
        node.bin_prev = NIL;
        node.bin_next = head;
        if head == NIL {
            let top = bin >> MANTISSA_BITS;
            self.used_bins[top] |= 1 << (bin & MANTISSA_MASK as usize);
            self.used_bins_top |= 1 << top;
        } else {
            self.nodes[head as usize].bin_prev = index;
        }
        self.bin_heads[bin] = index;
    }

    /// Removes free node `index` from its bin list, clearing mask bits of a
    /// bin that becomes empty.
    fn unlink_from_bin(&mut self, index: u32) {
        let node = &self.nodes[index as usize];
        let (prev, next, size) = (node.bin_prev, node.bin_next, node.size);
        if prev != NIL {
            self.nodes[prev as usize].bin_next = next;
        } else {
            let bin = bin_round_down(size);
            self.bin_heads[bin] = next;
            if next == NIL {
                let top = bin >> MANTISSA_BITS;
                self.used_bins[top] &= !(1 << (bin & MANTISSA_MASK as usize));
                if self.used_bins[top] == 0 {
                    self.used_bins_top &= !(1 << top);
                }
            }
        }
        if next != NIL {
            self.nodes[next as usize].bin_prev = prev;
        }
    }

    /// Stores `node` in a free slot (keeping that slot's generation) or a new
    /// one. The caller has checked that a slot is available.
    fn take_slot(&mut self, mut node: Node) -> u32 {
        match self.free_slots.pop() {
            Some(index) => {
                let slot = &mut self.nodes[index as usize];
                node.generation = slot.generation;
                *slot = node;
                index
            }
            None => {
                let index = self.nodes.len() as u32;
                self.nodes.push(node);
                index
            }
        }
    }

    /// Returns the (already unlinked) node slot `index` to the slot stack.
    fn release_slot(&mut self, index: u32) {
        let node = &mut self.nodes[index as usize];
        node.size = 0;
        node.bin_prev = NIL;
        node.bin_next = NIL;
        node.neighbor_prev = NIL;
        node.neighbor_next = NIL;
        self.free_slots.push(index);
    }
}

#[cfg(test)]
#[path = "allocator_tests.rs"]
mod tests;
