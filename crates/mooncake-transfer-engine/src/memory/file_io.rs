//! Reading a file straight into registered memory: one `preadv` per pass, so a disk tier
//! with `O_DIRECT` lands a record's value in the range it serves from, with no bounce
//! buffer and no copy.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::Region;

impl Region {
    /// Reads `file` from `file_offset` into `head`, then `[addr, addr+len)` of this region
    /// (checked: outside it panics), then `tail`, with vectored reads until all three are
    /// full or the file ends; returns the bytes read. With an `O_DIRECT` file every part
    /// must meet the device's alignment (the call fails with `EINVAL` otherwise).
    pub(crate) fn pread_into(
        &self,
        file: &File,
        file_offset: u64,
        head: &mut [u8],
        addr: u64,
        len: usize,
        tail: &mut [u8],
    ) -> io::Result<usize> {
        let mid = self.check(addr, len) as *mut u8;
        let parts = [
            (head.as_mut_ptr(), head.len()),
            (mid, len),
            (tail.as_mut_ptr(), tail.len()),
        ];
        let total = head.len() + len + tail.len();
        let mut done = 0usize;
        while done < total {
            let mut iov: Vec<libc::iovec> = Vec::with_capacity(parts.len());
            let mut skip = done;
            for &(p, l) in &parts {
                if skip >= l {
                    skip -= l;
                    continue;
                }
                iov.push(libc::iovec {
                    // `skip < l`, so this stays inside the part.
                    iov_base: p.wrapping_add(skip).cast(),
                    iov_len: l - skip,
                });
                skip = 0;
            }
            let at = libc::off_t::try_from(file_offset + done as u64)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: every iovec points into memory valid for writes for its length: `head`
            // and `tail` are live exclusive borrows, and the middle part lies inside the
            // region (checked above), which stays mapped while `self` lives; the kernel
            // writes bytes only. No Rust reference into the region exists meanwhile (module
            // docs: the store protocol gives a loading range this one writer).
            let n = unsafe { libc::preadv(file.as_raw_fd(), iov.as_ptr(), iov.len() as _, at) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                break;
            }
            done += n as usize;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::Region;

    #[test]
    fn a_file_lands_in_head_region_and_tail_in_order() {
        let path = std::env::temp_dir().join(format!("mooncake-pread-{}", std::process::id()));
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let r = Region::anonymous(1 << 16).unwrap();
        let (mut head, mut tail) = (vec![0u8; 100], vec![0u8; 5000]);
        let at = r.addr() + 4096;
        let n = r
            .pread_into(&f, 10, &mut head, at, 10_000, &mut tail)
            .unwrap();
        assert_eq!(n, 15_100);
        assert_eq!(head, bytes[10..110]);
        assert_eq!(r.slice(at, 10_000), &bytes[110..10_110]);
        assert_eq!(tail, bytes[10_110..15_110]);
        // Past the end: a short count, what there was is in place.
        let mut tail = vec![0u8; 8000];
        let n = r
            .pread_into(&f, 10_000, &mut [], at, 5_000, &mut tail)
            .unwrap();
        assert_eq!(n, 10_000);
        assert_eq!(r.slice(at, 5_000), &bytes[10_000..15_000]);
        assert_eq!(tail[..5_000], bytes[15_000..]);
        let _ = std::fs::remove_file(&path);
    }
}
