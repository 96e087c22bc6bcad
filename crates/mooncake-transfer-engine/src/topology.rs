//! The local topology matrix of the C++ engine (`Topology`, `src/topology.cpp`): for
//! each memory location, the NICs it prefers and the other NICs it may use. The C++
//! engine publishes it as an RDMA descriptor's `priority_matrix`; Python's
//! `TransferEngine.get_local_topology()` returns it as text.
//!
//! This engine moves data over TCP and drives no RDMA NIC, so every location's lists
//! are empty; the locations are this host's NUMA nodes (`cpu:<n>`), as the C++ engine
//! lists them on a host without NICs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Where the kernel lists NUMA nodes (`node0`, `node1`, ...).
const NUMA_NODES: &str = "/sys/devices/system/node";

/// The NICs of one memory location.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyEntry {
    /// NICs on the same NUMA node (or PCIe switch) as the memory.
    pub preferred: Vec<String>,
    /// The other NICs.
    pub available: Vec<String>,
}

/// A topology matrix: location name (`cpu:0`) to its NICs, ordered by name as the C++
/// engine's `std::map`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    entries: BTreeMap<String, TopologyEntry>,
}

impl Topology {
    /// One `cpu:<n>` location without NICs per NUMA node.
    pub fn cpu_only(numa_nodes: impl IntoIterator<Item = u32>) -> Self {
        let entries = numa_nodes
            .into_iter()
            .map(|n| (format!("cpu:{n}"), TopologyEntry::default()))
            .collect();
        Self { entries }
    }

    /// This host's topology as this engine uses it: its NUMA nodes, no NICs. Empty when
    /// the kernel does not list NUMA nodes (as the C++ engine's).
    pub fn discover() -> Self {
        Self::cpu_only(numa_nodes(Path::new(NUMA_NODES)))
    }

    /// The locations and their NICs.
    pub fn entries(&self) -> &BTreeMap<String, TopologyEntry> {
        &self.entries
    }

    /// The matrix as jsoncpp's `toStyledString()` writes it, which is what the C++
    /// engine's `Topology::toString()` returns: tab indentation, `" : "` after keys,
    /// every non-empty array on its own lines, a final newline.
    pub fn to_styled_json(&self) -> String {
        if self.entries.is_empty() {
            return "{}\n".into();
        }
        let mut out = String::from("{");
        for (i, (name, entry)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\n\t{} : \n\t[\n\t\t", quoted(name));
            styled_list(&mut out, &entry.preferred);
            out.push_str(",\n\t\t");
            styled_list(&mut out, &entry.available);
            out.push_str("\n\t]");
        }
        out.push_str("\n}\n");
        out
    }
}

fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A list of NIC names at nesting depth 2.
fn styled_list(out: &mut String, names: &[String]) {
    if names.is_empty() {
        out.push_str("[]");
        return;
    }
    out.push('[');
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\n\t\t\t{}", quoted(name));
    }
    out.push_str("\n\t\t]");
}

/// The numbers of the `node<n>` directories in `dir`, ascending.
fn numa_nodes(dir: &Path) -> Vec<u32> {
    let Ok(list) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<u32> = list
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
        .collect();
    nodes.sort_unstable();
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styled_as_jsoncpp() {
        assert_eq!(Topology::default().to_styled_json(), "{}\n");
        let one = Topology::cpu_only([0]).to_styled_json();
        assert_eq!(one, "{\n\t\"cpu:0\" : \n\t[\n\t\t[],\n\t\t[]\n\t]\n}\n");
        let mut nics = Topology::cpu_only([1, 0]);
        let entry = nics.entries.get_mut("cpu:1").unwrap();
        entry.preferred = vec!["mlx5_0".into(), "mlx5_1".into()];
        let want = "{\n\t\"cpu:0\" : \n\t[\n\t\t[],\n\t\t[]\n\t],\n\t\"cpu:1\" : \n\t[\n\t\t[\n\
                    \t\t\t\"mlx5_0\",\n\t\t\t\"mlx5_1\"\n\t\t],\n\t\t[]\n\t]\n}\n";
        assert_eq!(nics.to_styled_json(), want);
        let parsed: serde_json::Value = serde_json::from_str(&nics.to_styled_json()).unwrap();
        assert_eq!(parsed["cpu:1"][0][1], "mlx5_1");
    }

    #[test]
    fn numa_nodes_from_sysfs_layout() {
        let dir = std::env::temp_dir().join(format!("mooncake-topology-{}", std::process::id()));
        for sub in ["node1", "node0", "node10", "possible", "nodeX"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("node7"), b"a file, not a node").unwrap();
        assert_eq!(numa_nodes(&dir), [0, 1, 10]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(numa_nodes(&dir).is_empty());
        // Locations sort by name, as std::map does: cpu:10 before cpu:2.
        let names: Vec<_> = Topology::cpu_only([2, 10])
            .entries()
            .keys()
            .cloned()
            .collect();
        assert_eq!(names, ["cpu:10", "cpu:2"]);
    }

    #[test]
    fn this_host_has_a_cpu_location_per_numa_node() {
        let t = Topology::discover();
        let nodes = numa_nodes(Path::new(NUMA_NODES));
        assert_eq!(t.entries().len(), nodes.len());
        assert!(t.entries().values().all(|e| e == &TopologyEntry::default()));
    }
}
