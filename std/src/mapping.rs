//! A mapped enclosing buffer and the views made from it; read-only regions are shared
//! between mappings of the same file range within the process.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use memmap2::{Mmap, MmapMut};
use stridemap_core::{Mode, ValidDescriptor};

use crate::{ByteView, Element, Error, Result, View, ViewMut};

/// The enclosing buffer of a descriptor, mapped, with the descriptor it was opened for.
///
/// Views borrow the mapping, so none can outlive it. A read-only mapping may share its
/// memory with other `Mapping`s of the same file region (see
/// [`OpenOptions::reuse_mappings`](crate::OpenOptions::reuse_mappings)); a writable or
/// copy-on-write one never does.
///
/// ```
/// use stridemap::{OpenOptions, open};
/// use stridemap_core::ValidDescriptor;
///
/// fn total(desc: &ValidDescriptor) -> Result<f64, stridemap::Error> {
///     let m = open(desc, &OpenOptions::new())?; // checked and mapped
///     Ok(m.view::<f64>()?.iter().sum())
/// }
/// ```
#[derive(Debug)]
pub struct Mapping {
    desc: ValidDescriptor,
    mode: Mode,
    region: Region,
}

#[derive(Debug)]
enum Region {
    /// A zero-length buffer: nothing is mapped.
    Empty,
    /// Read-only, possibly shared with other mappings; the buffer starts `start` bytes in.
    Shared {
        region: Arc<SharedRegion>,
        start: usize,
    },
    /// Writable (`r+`, shared with the file) or private copy-on-write (`c`); this mapping's own.
    Own {
        map: MmapMut,
        /// Kept open: it holds the segment lock of SPEC.md §7 while mapped.
        _file: File,
    },
}

/// How a shared region's file was reached: what a later open must match to reuse it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Opened by this path under a policy with these roots (see `OpenOptions::policy`).
    Path {
        path: std::path::PathBuf,
        policy: Vec<(std::path::PathBuf, std::path::PathBuf, Option<&'static str>)>,
    },
    /// Received as an fd.
    Fd,
}

/// A read-only map of `[offset, offset + map.len())` of one file (device, inode).
#[derive(Debug)]
pub(crate) struct SharedRegion {
    map: Mmap,
    /// The file, kept (whether opened by path or received as an fd) to re-check it with
    /// fstat on reuse. (The segment lock lives as long as the map, which holds the open file
    /// description.)
    file: File,
    origin: Origin,
    key: (u64, u64),
    offset: u64,
    /// The segment id and generation whose header was checked, for segments.
    segment: Option<([u8; 16], u64)>,
}

/// Live shared regions of each file, by (device, inode).
type Registry = HashMap<(u64, u64), Vec<Weak<SharedRegion>>>;

static REGIONS: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

impl SharedRegion {
    pub(crate) fn new(
        map: Mmap,
        file: File,
        origin: Origin,
        key: (u64, u64),
        offset: u64,
        segment: Option<([u8; 16], u64)>,
    ) -> Arc<SharedRegion> {
        Arc::new(SharedRegion {
            map,
            file,
            origin,
            key,
            offset,
            segment,
        })
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    pub(crate) fn segment(&self) -> Option<([u8; 16], u64)> {
        self.segment
    }

    /// Makes this region findable by [`SharedRegion::find`].
    pub(crate) fn publish(self: &Arc<Self>) {
        let mut regions = REGIONS.lock().unwrap_or_else(PoisonError::into_inner);
        let list = regions.entry(self.key).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(self));
    }

    /// A live region of file `key` that `accept`s and covers `[offset, offset + len)`, and
    /// where that range starts inside it.
    pub(crate) fn find(
        key: (u64, u64),
        offset: u64,
        len: u64,
        accept: impl Fn(&SharedRegion) -> bool,
    ) -> Option<(Arc<SharedRegion>, usize)> {
        let mut regions = REGIONS.lock().unwrap_or_else(PoisonError::into_inner);
        let list = regions.get_mut(&key)?;
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).find_map(|r| {
            if !accept(&r) {
                return None;
            }
            let start = offset.checked_sub(r.offset)?;
            let end = start.checked_add(len)?;
            (end <= r.map.len() as u64).then_some((r.clone(), start as usize))
        })
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        let mut regions = REGIONS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = regions.get_mut(&self.key) {
            list.retain(|w| w.strong_count() > 0);
            if list.is_empty() {
                regions.remove(&self.key);
            }
        }
    }
}

impl Mapping {
    pub(crate) fn empty(desc: ValidDescriptor, mode: Mode) -> Mapping {
        Mapping {
            desc,
            mode,
            region: Region::Empty,
        }
    }

    pub(crate) fn shared(
        desc: ValidDescriptor,
        region: Arc<SharedRegion>,
        start: usize,
    ) -> Mapping {
        Mapping {
            desc,
            mode: Mode::ReadOnly,
            region: Region::Shared { region, start },
        }
    }

    pub(crate) fn own(desc: ValidDescriptor, mode: Mode, map: MmapMut, file: File) -> Mapping {
        Mapping {
            desc,
            mode,
            region: Region::Own { map, _file: file },
        }
    }

    /// The descriptor this mapping was opened for.
    pub fn descriptor(&self) -> &ValidDescriptor {
        &self.desc
    }

    /// The mode it was mapped with (what the caller asked for, allowed by the descriptor).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The enclosing buffer's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.region {
            Region::Empty => &[],
            Region::Shared { region, start } => {
                let len = self.desc.buffer_len() as usize;
                region.map.get(*start..start + len).unwrap_or_default()
            }
            Region::Own { map, .. } => map,
        }
    }

    /// The enclosing buffer's bytes, writable (`r+` and `c` mappings).
    pub fn bytes_mut(&mut self) -> Result<&mut [u8]> {
        match &mut self.region {
            Region::Empty => Ok(&mut []),
            Region::Shared { .. } => Err(Error::ReadOnly),
            Region::Own { map, .. } => Ok(map),
        }
    }

    /// A typed view of the described array; the dtype must be `T`'s exactly.
    pub fn view<T: Element>(&self) -> Result<View<'_, T>> {
        self.check_dtype::<T>()?;
        View::with_source(self.bytes(), self.desc.layout(), Some(&self.desc))
    }

    /// A writable typed view (`r+`: writes reach the producer; `c`: they stay here).
    pub fn view_mut<T: Element>(&mut self) -> Result<ViewMut<'_, T>> {
        self.check_dtype::<T>()?;
        let layout = self.desc.layout();
        let bytes = match &mut self.region {
            Region::Empty => &mut [][..],
            Region::Shared { .. } => return Err(Error::ReadOnly),
            Region::Own { map, .. } => &mut map[..],
        };
        ViewMut::with_source(bytes, layout, Some(&self.desc))
    }

    /// A byte-level view of the described array, for any dtype and alignment.
    pub fn byte_view(&self) -> Result<ByteView<'_>> {
        let layout = self.desc.layout();
        ByteView::with_source(self.bytes(), layout, self.desc.dtype(), Some(&self.desc))
    }

    fn check_dtype<T: Element>(&self) -> Result<()> {
        let want = T::dtype()?;
        if want != self.desc.dtype() {
            return Err(Error::DtypeMismatch {
                have: self.desc.dtype(),
                want,
            });
        }
        Ok(())
    }
}
