//! The core's gauges and counters in Prometheus text (Mooncake's names).

use std::fmt::Write as _;

use crate::core::MasterCore;

/// Appends the core's gauges and counters to `out`.
pub(super) fn core_metrics(core: &MasterCore, out: &mut String) {
    let stats = core.eviction_stats();
    let gauges = [
        ("master_allocated_bytes", core.allocated()),
        ("master_total_capacity_bytes", core.capacity()),
        ("master_key_count", core.key_count() as u64),
        (
            "master_soft_pin_key_count",
            core.soft_pin_key_count() as u64,
        ),
        ("master_active_clients", core.active_clients() as u64),
    ];
    for (name, v) in gauges {
        let _ = writeln!(out, "# TYPE {name} gauge\n{name} {v}");
    }
    for (seg, cap, used) in core.segment_usage() {
        let _ = writeln!(out, "segment_allocated_bytes{{segment=\"{seg}\"}} {used}");
        let _ = writeln!(
            out,
            "segment_total_capacity_bytes{{segment=\"{seg}\"}} {cap}"
        );
    }
    let counters = [
        ("master_successful_evictions_total", stats.successful_passes),
        ("master_attempted_evictions_total", stats.attempted_passes),
        ("master_evicted_key_count", stats.evicted_keys),
        ("master_evicted_size_bytes", stats.evicted_bytes),
    ];
    for (name, v) in counters {
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
    }
    crate::explain::render_lookup_metrics(core, out);
}
