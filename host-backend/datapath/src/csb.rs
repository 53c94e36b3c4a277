//! Where a client's CSB lives, and safe access to its entries.
//!
//! A host client's CSB is a small memfd the daemon creates and shares ([`CsbMem`]); a VM's is
//! in guest memory. Either way the sync loop sees a [`CsbRef`]: two arrays of
//! [`CsbAtok`]/[`CsbKtoa`] entries whose every field is atomic, so shared references to them
//! are sound even while the other side writes.

use std::fmt;
use std::fs::File;
use std::ptr::NonNull;
use std::sync::Arc;

use ptnet_spec::csb::{CSB_ENTRY_SIZE, CsbAtok, CsbKtoa};

use crate::sys::{self, GuardedMapping, PAGE_SIZE, round_up};

/// Keeps the memory behind a [`CsbRef`] mapped.
pub trait CsbBacking: Send + Sync + fmt::Debug {}

impl<T: Send + Sync + fmt::Debug> CsbBacking for T {}

/// The two CSB arrays of one client, one entry per ring (TX rings, then RX rings).
///
/// Invariant: `atok` and `ktoa` point to `n` consecutive, 64-byte aligned entries each, kept
/// mapped by `_backing` for the life of the value.
#[derive(Clone)]
pub struct CsbRef {
    atok: NonNull<CsbAtok>,
    ktoa: NonNull<CsbKtoa>,
    n: u32,
    _backing: Arc<dyn CsbBacking>,
}

impl fmt::Debug for CsbRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsbRef").field("rings", &self.n).finish()
    }
}

// SAFETY: the entries are made of atomics only and the backing is Send + Sync.
unsafe impl Send for CsbRef {}
// SAFETY: as above.
unsafe impl Sync for CsbRef {}

impl CsbRef {
    /// Builds a reference from raw array pointers.
    ///
    /// # Safety
    /// `atok` and `ktoa` must each point to `n` consecutive 64-byte aligned entries that stay
    /// mapped (readable and writable) as long as `backing` is alive, and that nothing
    /// accesses other than atomically.
    pub unsafe fn from_raw(
        atok: NonNull<CsbAtok>,
        ktoa: NonNull<CsbKtoa>,
        n: u32,
        backing: Arc<dyn CsbBacking>,
    ) -> Self {
        CsbRef {
            atok,
            ktoa,
            n,
            _backing: backing,
        }
    }

    /// Number of entries in each array.
    pub fn len(&self) -> u32 {
        self.n
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The atok entry of ring `i`, if it exists.
    #[inline]
    pub fn atok(&self, i: u32) -> Option<&CsbAtok> {
        // SAFETY: i < n keeps the pointer inside the array (type invariant); the entry is all
        // atomics, so a shared reference is sound under concurrent writes.
        (i < self.n).then(|| unsafe { &*self.atok.as_ptr().add(i as usize) })
    }

    /// The ktoa entry of ring `i`, if it exists.
    #[inline]
    pub fn ktoa(&self, i: u32) -> Option<&CsbKtoa> {
        // SAFETY: as in `atok`.
        (i < self.n).then(|| unsafe { &*self.ktoa.as_ptr().add(i as usize) })
    }
}

/// A CSB in its own memfd, for host clients: the atok array at offset 0, the ktoa array at
/// [`CsbMem::ktoa_offset`], both page aligned.
#[derive(Debug)]
pub struct CsbMem {
    file: File,
    map: GuardedMapping,
    n: u32,
    ktoa_offset: usize,
}

impl CsbMem {
    /// Creates a zeroed CSB for `n` rings.
    pub fn new(n: u32) -> std::io::Result<Arc<Self>> {
        let size = 2 * Self::array_size(n);
        let file = sys::memfd(c"ptnet-csb", size, false)?;
        let map = GuardedMapping::new(&file, size)?;
        Ok(Arc::new(CsbMem {
            file,
            map,
            n,
            ktoa_offset: size / 2,
        }))
    }

    /// Maps a CSB someone else created (a host client's view): the first `size` bytes of
    /// `file`, `n` atok entries at offset 0 and `n` ktoa entries at `ktoa_offset`; both arrays
    /// must lie, 64-byte aligned, inside the mapping.
    pub fn attach(file: File, size: usize, n: u32, ktoa_offset: u64) -> std::io::Result<Arc<Self>> {
        let bad = |what| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let need = (n as usize) * CSB_ENTRY_SIZE as usize;
        let ktoa_offset = usize::try_from(ktoa_offset).map_err(|_| bad("ktoa offset"))?;
        let fits = n > 0
            && ktoa_offset % CSB_ENTRY_SIZE as usize == 0
            && need <= size
            && ktoa_offset.checked_add(need).is_some_and(|e| e <= size);
        if !fits {
            return Err(bad("CSB arrays outside the CSB memory"));
        }
        if file.metadata()?.len() < size as u64 {
            return Err(bad("CSB memory smaller than announced"));
        }
        let map = GuardedMapping::new(&file, size)?;
        Ok(Arc::new(CsbMem {
            file,
            map,
            n,
            ktoa_offset,
        }))
    }

    /// Bytes of one array, rounded to a page.
    pub fn array_size(n: u32) -> usize {
        round_up((n as usize).max(1) * CSB_ENTRY_SIZE as usize, PAGE_SIZE)
    }

    /// Offset of the ktoa array.
    pub fn ktoa_offset(&self) -> usize {
        self.ktoa_offset
    }

    /// Total size of the memfd.
    pub fn size(&self) -> usize {
        self.map.len()
    }

    /// The memfd, to hand to the client.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A [`CsbRef`] over this memory.
    pub fn csb(self: &Arc<Self>) -> CsbRef {
        let base = self.map.base();
        // SAFETY: both arrays of n entries lie inside the mapping, 64-byte aligned (checked by
        // `attach`, by construction in `new`); the Arc keeps the mapping alive; every access
        // to the entries is atomic.
        unsafe {
            CsbRef::from_raw(
                NonNull::new_unchecked(base.cast()),
                NonNull::new_unchecked(base.add(self.ktoa_offset()).cast()),
                self.n,
                Arc::clone(self) as Arc<dyn CsbBacking>,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csb_entries_are_bounds_checked() {
        let m = CsbMem::new(3).unwrap();
        let c = m.csb();
        assert!(c.atok(2).is_some() && c.ktoa(2).is_some());
        assert!(c.atok(3).is_none() && c.ktoa(u32::MAX).is_none());
        c.ktoa(1).unwrap().kern_write(4, 5);
        assert_eq!(c.ktoa(1).unwrap().appl_read().hwtail, 5);
    }
}
