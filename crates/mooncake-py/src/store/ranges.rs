//! The ranged reads and writes (`python-api-2.md` §2, §4): requests shaped as nested lists
//! checked and flattened into per-key fragments, results put back into the request's
//! shape. Malformed parts get -600 and are left out of what goes to the backend.

use mooncake_store::Fragment;
use pyo3::Python;

use super::backend::Backend;
use super::codes::INVALID;

/// `get_into_ranges`: per buffer `i`, key `j` and fragment `k`, the length read or a code.
pub(super) struct RangeReads {
    pub(super) ptrs: Vec<u64>,
    pub(super) keys: Vec<Vec<String>>,
    pub(super) dst: Vec<Vec<Vec<u64>>>,
    pub(super) src: Vec<Vec<Vec<u64>>>,
    pub(super) sizes: Vec<Vec<Vec<u64>>>,
}

impl RangeReads {
    /// Runs the reads on `backend` (-600 throughout when there is none, the request is
    /// malformed or a buffer is not one the backend can read into).
    pub(super) fn run(self, py: Python<'_>, backend: Option<&Backend>) -> Vec<Vec<Vec<i64>>> {
        let Self {
            ptrs,
            keys,
            dst,
            src,
            sizes,
        } = self;
        let mut out: Vec<Vec<Vec<i64>>> = (0..ptrs.len())
            .map(|i| {
                let n = keys.get(i).map_or(1, Vec::len);
                (0..n)
                    .map(|j| {
                        let f = dst.get(i).and_then(|r| r.get(j)).map_or(1, Vec::len);
                        vec![i64::from(INVALID); f]
                    })
                    .collect()
            })
            .collect();
        let n = ptrs.len();
        let Some(ops) = backend.map(Backend::ops) else {
            return out;
        };
        if [keys.len(), dst.len(), src.len(), sizes.len()] != [n; 4] {
            return out;
        }
        let mut items = Vec::new();
        let mut slots = Vec::new();
        for i in 0..n {
            let nk = keys[i].len();
            let Some(cap) = ops.range_capacity(ptrs[i]) else {
                continue;
            };
            if ptrs[i] == 0 || [dst[i].len(), src[i].len(), sizes[i].len()] != [nk; 3] {
                continue;
            }
            for j in 0..nk {
                let (d, s, z) = (&dst[i][j], &src[i][j], &sizes[i][j]);
                if s.len() != d.len() || z.len() != d.len() {
                    continue;
                }
                let mut frags = Vec::new();
                for k in 0..d.len() {
                    if d[k].checked_add(z[k]).is_some_and(|end| end <= cap) {
                        frags.push((ptrs[i] + d[k], z[k], s[k]));
                        slots.push((i, j, k));
                    }
                }
                items.push((keys[i][j].clone(), frags));
            }
        }
        let results = ops.read_ranges(py, items);
        let mut it = slots.into_iter();
        for row in results {
            for r in row {
                if let Some((i, j, k)) = it.next() {
                    out[i][j][k] = r;
                }
            }
        }
        out
    }
}

/// The ranged calls on sessions: per key the bytes moved, or a negative code; `[]` when
/// there is no backend.
pub(super) fn session_ranges(
    py: Python<'_>,
    backend: Option<&Backend>,
    keys: Vec<String>,
    [ptrs, sizes, offs]: [Vec<Vec<u64>>; 3],
    write: bool,
) -> Vec<i64> {
    let invalid = i64::from(INVALID);
    let Some(ops) = backend.map(Backend::ops) else {
        return Vec::new();
    };
    let n = keys.len();
    if [ptrs.len(), sizes.len(), offs.len()] != [n; 3] {
        return vec![invalid; n];
    }
    let mut out = vec![invalid; n];
    let mut items: Vec<(String, Vec<Fragment>)> = Vec::new();
    let mut idx = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let (p, z, o) = (&ptrs[i], &sizes[i], &offs[i]);
        if z.len() != p.len() || o.len() != p.len() {
            continue;
        }
        let frags = (0..p.len()).map(|k| (p[k], z[k], o[k])).collect();
        items.push((key, frags));
        idx.push(i);
    }
    let results = ops.session_ranges(py, &items, write);
    for (i, r) in idx.into_iter().zip(results) {
        out[i] = r;
    }
    out
}
