//! A mapped enclosing buffer and the views made from it; read-only regions are shared
//! between mappings of the same file range within the process.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use stridemap_core::{Mode, ValidDescriptor};

use crate::sys::{Promise, ReadMap, VolatileBytes, WriteMap};
use crate::{
    ByteView, Element, OwnedArray, View, ViewError, ViewMut, ViewResult as Result, VolatileView,
    VolatileViewMut,
};

/// The enclosing buffer of a descriptor, mapped, with the descriptor it was opened for.
///
/// A mapping of a path-named file faults (`SIGBUS`) on access to bytes its writer truncated
/// away after it was mapped (see [`OpenOptions::open`](crate::OpenOptions::open)); fds are
/// sealed against shrinking.
///
/// Views borrow the mapping, so none can outlive it. A read-only mapping may share its
/// memory with other `Mapping`s of the same file region (see
/// [`OpenOptions::reuse_mappings`](crate::OpenOptions::reuse_mappings)); a writable or
/// copy-on-write one never does.
///
/// Two kinds of views (see the crate's Soundness section):
/// - [`volatile_view`](Mapping::volatile_view) / [`volatile_view_mut`](Mapping::volatile_view_mut)
///   work on every mapping: elements are copied in and out, no reference is lent, so other
///   processes may write the bytes meanwhile (an `r+` output, a path-named file).
/// - [`view`](Mapping::view), [`view_mut`](Mapping::view_mut), [`byte_view`](Mapping::byte_view)
///   and [`bytes`](Mapping::bytes) lend references (`&T`, slices, at slice speed), so they
///   need bytes nobody else can change: a frozen memfd ([`is_frozen`](Mapping::is_frozen),
///   checked with the kernel's seals on the fd this process holds) or the owner's promise,
///   [`assume_no_outside_writes`](Mapping::assume_no_outside_writes).
///
/// ```
/// use stridemap::{OpenOptions, ValidDescriptor};
///
/// fn total(desc: &ValidDescriptor) -> Result<f64, stridemap::Error> {
///     let m = OpenOptions::new().open(desc)?; // checked and mapped
///     Ok(m.volatile_view::<f64>()?.iter().sum())
/// }
/// ```
#[derive(Debug)]
pub struct Mapping {
    desc: ValidDescriptor,
    mode: Mode,
    region: Region,
    /// The owner's promise for this mapping's map ([`Mapping::assume_no_outside_writes`]).
    promise: Option<Promise>,
}

#[derive(Debug)]
enum Region {
    /// A zero-length buffer: nothing is mapped.
    Empty,
    /// Read-only, possibly shared with other mappings; the buffer starts `start` bytes in.
    Reusable {
        region: Arc<ReusableRegion>,
        start: usize,
    },
    /// Writable (`r+`, shared with the file) or private copy-on-write (`c`); this mapping's own.
    Own {
        map: WriteMap,
        /// Kept open: it holds the segment lock of SPEC.md §7 while mapped.
        file: File,
    },
}

/// How a reusable region's file was reached: what a later open must match to reuse it.
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
pub(crate) struct ReusableRegion {
    map: ReadMap,
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

/// Live reusable regions of each file, by (device, inode).
type Registry = HashMap<(u64, u64), Vec<Weak<ReusableRegion>>>;

static REGIONS: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

impl ReusableRegion {
    pub(crate) fn new(
        map: ReadMap,
        file: File,
        origin: Origin,
        key: (u64, u64),
        offset: u64,
        segment: Option<([u8; 16], u64)>,
    ) -> Arc<ReusableRegion> {
        Arc::new(ReusableRegion {
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

    /// Where `[offset, offset + len)` of the file starts in this region's map, if inside it.
    pub(crate) fn covers(&self, offset: u64, len: u64) -> Option<usize> {
        let start = offset.checked_sub(self.offset)?;
        let end = start.checked_add(len)?;
        (end <= self.map.len() as u64).then_some(start as usize)
    }

    /// Makes this region findable by [`ReusableRegion::find`].
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
        accept: impl Fn(&ReusableRegion) -> bool,
    ) -> Option<(Arc<ReusableRegion>, usize)> {
        let mut regions = REGIONS.lock().unwrap_or_else(PoisonError::into_inner);
        let list = regions.get_mut(&key)?;
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).find_map(|r| {
            if !accept(&r) {
                return None;
            }
            let start = r.covers(offset, len)?;
            Some((r.clone(), start))
        })
    }
}

impl Drop for ReusableRegion {
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
            promise: None,
        }
    }

    pub(crate) fn reusable(
        desc: ValidDescriptor,
        region: Arc<ReusableRegion>,
        start: usize,
    ) -> Mapping {
        Mapping {
            desc,
            mode: Mode::ReadOnly,
            region: Region::Reusable { region, start },
            promise: None,
        }
    }

    pub(crate) fn own(desc: ValidDescriptor, mode: Mode, map: WriteMap, file: File) -> Mapping {
        Mapping {
            desc,
            mode,
            region: Region::Own { map, file },
            promise: None,
        }
    }

    /// The read-only region behind this mapping, if it is one.
    pub(crate) fn reusable_region(&self) -> Option<&Arc<ReusableRegion>> {
        match &self.region {
            Region::Reusable { region, .. } => Some(region),
            _ => None,
        }
    }

    /// The file a writable or private mapping keeps open (it holds the segment lock).
    pub(crate) fn own_file(&self) -> Option<&File> {
        match &self.region {
            Region::Own { file, .. } => Some(file),
            _ => None,
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

    /// Whether the file this process maps was sealed for good when it was mapped:
    /// `F_SEAL_WRITE`, `F_SEAL_SHRINK` and `F_SEAL_GROW`, read with `F_GET_SEALS` on the fd
    /// this process holds (a frozen memfd from stridemap-shm's `SharedArrayMut::freeze`).
    /// The kernel grants `F_SEAL_WRITE` only when no writable map of the file exists and then
    /// refuses every writer, so the reference-lending views work without any promise.
    /// `F_SEAL_FUTURE_WRITE` is not enough (a map made before it stays writable): such a
    /// mapping is not frozen. A mapping of no bytes is frozen.
    pub fn is_frozen(&self) -> bool {
        match &self.region {
            Region::Empty => true,
            Region::Reusable { region, .. } => region.map.is_sealed(),
            Region::Own { map, .. } => map.is_sealed(),
        }
    }

    /// Stores the owner's promise (see `sys::Promise`).
    pub(crate) fn set_promise(&mut self, promise: Promise) {
        self.promise = Some(promise);
    }

    /// The address of the first byte of the map behind this mapping (a reusable region's whole
    /// map), if anything is mapped.
    pub(crate) fn map_base(&self) -> Option<usize> {
        match &self.region {
            Region::Empty => None,
            Region::Reusable { region, .. } => Some(region.map.addr()),
            Region::Own { map, .. } => Some(map.addr()),
        }
    }

    /// The file the buffer was mapped from, for reading it with `pread` instead of the map
    /// (a file truncated meanwhile then gives an error, not `SIGBUS`): `None` when nothing
    /// is mapped, or the map is private (`c`: this process's writes are only in the map).
    pub(crate) fn file_to_read(&self) -> Option<&File> {
        match &self.region {
            Region::Reusable { region, .. } => Some(region.file()),
            Region::Own { file, .. } if self.mode == Mode::ReadWrite => Some(file),
            _ => None,
        }
    }

    /// The bytes, for raw access (always allowed).
    pub(crate) fn volatile_bytes(&self) -> VolatileBytes<'_> {
        match &self.region {
            Region::Empty => VolatileBytes::from_slice(&[]),
            Region::Reusable { region, start } => {
                let len = self.desc.buffer_len() as usize;
                let all = region.map.volatile();
                all.window(*start, len)
            }
            Region::Own { map, .. } => map.volatile(),
        }
    }

    /// The enclosing buffer's address (for [`Mapping::describe_array`]).
    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    pub(crate) fn base_addr(&self) -> usize {
        self.volatile_bytes().addr()
    }

    /// The address of the enclosing buffer's first byte, e.g. to tell whether two mappings
    /// share memory, or for FFI (reading through it is the caller's `unsafe`, under the
    /// contract of [`assume_no_outside_writes`](Mapping::assume_no_outside_writes)).
    pub fn as_ptr(&self) -> *const u8 {
        self.volatile_bytes().as_ptr()
    }

    /// The enclosing buffer's bytes.
    ///
    /// # Errors
    /// [`ViewError::NotFrozen`] unless the mapping [`is_frozen`](Mapping::is_frozen) or its
    /// owner [promised](Mapping::assume_no_outside_writes): use [`copy_array`](Mapping::copy_array)
    /// or [`volatile_view`](Mapping::volatile_view) then.
    pub fn bytes(&self) -> Result<&[u8]> {
        let promise = self.promise.as_ref();
        Ok(match &self.region {
            Region::Empty => &[],
            Region::Reusable { region, start } => {
                let len = self.desc.buffer_len() as usize;
                region
                    .map
                    .bytes(promise)
                    .ok_or(ViewError::NotFrozen)?
                    .get(*start..start.saturating_add(len))
                    .unwrap_or_default()
            }
            Region::Own { map, .. } => map.bytes(promise).ok_or(ViewError::NotFrozen)?,
        })
    }

    /// The enclosing buffer's bytes, writable (`r+` and `c` mappings).
    ///
    /// # Errors
    /// [`ViewError::ReadOnly`] for an `r` mapping; [`ViewError::NotFrozen`] as for [`bytes`](Mapping::bytes).
    pub fn bytes_mut(&mut self) -> Result<&mut [u8]> {
        match &mut self.region {
            Region::Empty => Ok(&mut []),
            Region::Reusable { .. } => Err(ViewError::ReadOnly),
            Region::Own { map, .. } => map
                .bytes_mut(self.promise.as_ref())
                .ok_or(ViewError::NotFrozen),
        }
    }

    /// A typed view of the described array lending `&T`s; the dtype must be `T`'s exactly.
    ///
    /// # Errors
    /// [`ViewError::DtypeMismatch`]; [`ViewError::NotFrozen`] as for [`bytes`](Mapping::bytes) (use
    /// [`volatile_view`](Mapping::volatile_view) there); alignment errors as for [`View::new`].
    pub fn view<T: Element>(&self) -> Result<View<'_, T>> {
        self.check_dtype::<T>()?;
        View::with_source(self.bytes()?, self.desc.layout(), Some(&self.desc))
    }

    /// A writable typed view lending `&mut T`s (`r+`: writes reach the producer; `c`: they
    /// stay here).
    ///
    /// # Errors
    /// As [`view`](Mapping::view), and [`ViewError::ReadOnly`] for an `r` mapping. For an `r+`
    /// output other processes also write, use [`volatile_view_mut`](Mapping::volatile_view_mut).
    pub fn view_mut<T: Element>(&mut self) -> Result<ViewMut<'_, T>> {
        self.check_dtype::<T>()?;
        let layout = self.desc.layout();
        let bytes = match &mut self.region {
            Region::Empty => &mut [][..],
            Region::Reusable { .. } => return Err(ViewError::ReadOnly),
            Region::Own { map, .. } => map
                .bytes_mut(self.promise.as_ref())
                .ok_or(ViewError::NotFrozen)?,
        };
        ViewMut::with_source(bytes, layout, Some(&self.desc))
    }

    /// A byte-level view of the described array, for any dtype and alignment.
    ///
    /// # Errors
    /// [`ViewError::NotFrozen`] as for [`bytes`](Mapping::bytes): use
    /// [`copy_array`](Mapping::copy_array) there.
    pub fn byte_view(&self) -> Result<ByteView<'_>> {
        let layout = self.desc.layout();
        ByteView::with_source(self.bytes()?, layout, self.desc.dtype(), Some(&self.desc))
    }

    /// A typed view of the described array that copies elements out one by one and lends no
    /// reference: sound whoever writes the bytes meanwhile. Works on every mapping.
    ///
    /// # Errors
    /// [`ViewError::DtypeMismatch`]; alignment errors as for [`View::new`].
    pub fn volatile_view<T: Element>(&self) -> Result<VolatileView<'_, T>> {
        self.check_dtype::<T>()?;
        VolatileView::with_source(self.volatile_bytes(), self.desc.layout(), Some(&self.desc))
    }

    /// A writable typed view that copies elements in and out and lends no reference: how a
    /// worker writes its part of a shared `r+` output while others write theirs. The mapping
    /// must be opened writable: `OpenOptions::new().mode(Mode::ReadWrite)` (the default
    /// options map read-only).
    ///
    /// # Errors
    /// As [`volatile_view`](Mapping::volatile_view), and [`ViewError::ReadOnly`] for an `r` mapping.
    pub fn volatile_view_mut<T: Element>(&mut self) -> Result<VolatileViewMut<'_, T>> {
        self.check_dtype::<T>()?;
        let layout = self.desc.layout();
        let bytes = match &mut self.region {
            Region::Empty => crate::sys::VolatileBytesMut::from_slice(&mut []),
            Region::Reusable { .. } => return Err(ViewError::ReadOnly),
            Region::Own { map, .. } => map.volatile_mut(),
        };
        VolatileViewMut::with_source(bytes, layout, Some(&self.desc))
    }

    /// A private copy of the described array's elements, packed in C order, that this
    /// process owns: typed and byte views of it lend references whoever writes the mapping.
    ///
    /// # Errors
    /// [`ViewError::TooLarge`] if the elements do not fit in memory's address space.
    pub fn copy_array(&self) -> Result<OwnedArray> {
        OwnedArray::copy_from(self.volatile_bytes(), self.desc.layout(), self.desc.dtype())
    }

    fn check_dtype<T: Element>(&self) -> Result<()> {
        let want = T::dtype()?;
        if want != self.desc.dtype() {
            return Err(ViewError::DtypeMismatch {
                have: self.desc.dtype(),
                want,
            });
        }
        Ok(())
    }
}
