//! The crate's only `unsafe` code: mapping a file's bytes, the raw (reference-free) access to
//! bytes another process may change, and (with the `ndarray` feature) handing bytes to ndarray
//! as raw pointers.
//!
//! # The soundness argument
//!
//! A map of a file is memory whose bytes can change or vanish behind the program's back:
//! memmap2 makes mapping `unsafe` because a `&[u8]` over it is undefined behaviour if the file
//! "is subsequently modified, in or out of process". This module discharges that contract in
//! exactly two ways, and everything outside it can only use what it exports:
//!
//! - **References** (`&[u8]`, `&mut [u8]`) to mapped bytes exist only where the map itself
//!   says they are sound: the file it maps was sealed for good when checked on the fd this
//!   process holds (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`, see [`sealed_for_good`]:
//!   the kernel refuses every writer, old maps included, from then on), or the caller
//!   promised it for that one map ([`Promise::for_map`], an `unsafe fn`, reached only
//!   through `Mapping::assume_no_outside_writes`). A map of no bytes is not a map: the
//!   mapping lends `&[]` without either.
//! - **Raw access** ([`VolatileBytes`], [`VolatileBytesMut`]) for every other map: no reference to
//!   the bytes is ever made; each element is read or written with one volatile access (of an
//!   aligned `T`, else byte by byte) that a check in this module keeps inside the handle's
//!   range, and bulk copies go to or from memory this process owns (a live borrow, which
//!   cannot be mapped bytes: references to those exist only under the rule above). The
//!   compiler assumes nothing about the bytes between accesses, so a change made by any other
//!   writer can only change the *values* read, and every bit pattern is a valid value of an
//!   `Element` (they are `Pod`). Other writers include other processes, and other maps of the
//!   same file in this one: safe code can open two `r+` mappings of one output and write
//!   them from two threads, and the borrow checker sees two maps. So the proof never assumes
//!   that nothing else reaches the bytes: they are treated as memory outside the Rust
//!   abstract machine (like a device writing memory), and an element written by another
//!   writer at the same moment may be read torn, as in C. What it does assume, that no
//!   reference to them is in use, the rule above and the borrows below enforce.
//!
//! A split ([`split_ranges`]) gives each piece of one writer a handle allowed bytes no other
//! piece is allowed: a window of its own, or a [`Part`] (the elements of one layout with an
//! index range of their own on one axis), checked on every access, all in this module, never
//! on the layouts the views compute. That keeps one handle's pieces from writing the same
//! element from two threads (a guarantee about values); it is not a premise of soundness.
//!
//! What no check can rule out, and the README's trust model states: a producer that truncates
//! a path-named file after it was mapped makes this process fault (SIGBUS) on access. Sealed
//! fds (O9) and the segment lock (SPEC.md §7) rule it out for fd-passed and stridemap segments.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::ptr::NonNull;

use bytemuck::Pod;
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{SealFlags, fcntl_get_seals};
use stridemap_core::Layout;

/// Whether `file` (the file this process maps, through the fd it holds) is sealed so that
/// nobody can ever change its bytes or its size: `F_SEAL_WRITE | F_SEAL_SHRINK |
/// F_SEAL_GROW`, read with `F_GET_SEALS` on that fd, never taken from a descriptor's word.
///
/// The kernel adds `F_SEAL_WRITE` only while no writable shared map of the file exists (else
/// `EBUSY`), and from then on refuses write(2), new writable shared maps and `mprotect` to
/// writable; seals are never removed. So once this returns true, no process (this one
/// included) can write or resize the file for the rest of its life. `F_SEAL_FUTURE_WRITE`
/// alone is not enough: a writable map made before it stays writable (issue 20).
fn sealed_for_good(file: &File) -> bool {
    fcntl_get_seals(file)
        .is_ok_and(|s| s.contains(SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW))
}

/// The caller's promise that nobody changes the bytes of one map while it lives: what lets
/// the reference-lending views work on a map that is not sealed. Made only by the `unsafe`
/// [`Promise::for_map`], for the map at one address, and honoured only by that map (the
/// `bytes` methods compare the address); not `Clone` or `Copy`.
#[derive(Debug)]
pub(crate) struct Promise {
    base: usize,
}

impl Promise {
    /// The promise for the map whose first byte is at `base`.
    ///
    /// # Safety
    /// For as long as that map lives, no other process, and no other map or file handle in
    /// this one, writes or truncates its bytes (memmap2's contract for `Mmap`/`MmapMut`).
    pub(crate) unsafe fn for_map(base: usize) -> Promise {
        Promise { base }
    }

    fn covers(promise: Option<&Promise>, base: usize) -> bool {
        promise.is_some_and(|p| p.base == base)
    }
}

impl crate::Mapping {
    /// Promises that the bytes will not change behind this mapping's back, so that
    /// [`view`](crate::Mapping::view), [`view_mut`](crate::Mapping::view_mut), [`bytes`](crate::Mapping::bytes)
    /// and the other reference-lending methods work on a mapping that is not frozen.
    ///
    /// # Safety
    /// From now until this `Mapping` is dropped, no other process, and no other mapping or
    /// file handle in this one, writes or truncates the mapped bytes of the file. This is
    /// memmap2's contract for `Mmap`: the views lend `&T`/`&mut T`, and the compiler may
    /// assume that what they point to does not change (or, for `&mut`, that nothing else
    /// reads it). A writer elsewhere while views exist is undefined behaviour. For an `r+`
    /// output that workers write, use [`volatile_view_mut`](crate::Mapping::volatile_view_mut) instead.
    ///
    /// ```
    /// # fn f(mut m: stridemap::Mapping) -> stridemap::Result<()> {
    /// // SAFETY: this process made the file and nobody else writes it while we read.
    /// unsafe { m.assume_no_outside_writes() };
    /// let v = m.view::<f64>()?;
    /// # Ok(()) }
    /// ```
    ///
    /// The promise is an `unsafe` call; it cannot be made by accident:
    ///
    /// ```compile_fail,E0133
    /// # fn f(mut m: stridemap::Mapping) {
    /// m.assume_no_outside_writes();
    /// # }
    /// ```
    pub unsafe fn assume_no_outside_writes(&mut self) {
        if let Some(base) = self.map_base() {
            // SAFETY: the caller's promise is `Promise::for_map`'s contract, for this
            // mapping's map and life (the promise is stored in the mapping and dies with it).
            self.set_promise(unsafe { Promise::for_map(base) });
        }
    }
}

/// A read-only shared map (`MAP_SHARED`, `PROT_READ`) of a checked file range.
#[derive(Debug)]
pub(crate) struct ReadMap {
    map: MmapRaw,
    /// The mapped file was [sealed for good](sealed_for_good) when checked after mapping.
    sealed: bool,
}

/// A writable map: shared (`r+`, writes reach the file) or private copy-on-write (`c`).
#[derive(Debug)]
pub(crate) struct WriteMap {
    map: RawMap,
    /// `c` only: the mapped file was [sealed for good](sealed_for_good) (an `r+` map of such
    /// a file cannot exist).
    sealed: bool,
}

/// `[offset, offset + len)` of `file`, shared and read-only (`MAP_SHARED`, `PROT_READ`).
pub(crate) fn map_read(file: &File, offset: u64, len: usize) -> io::Result<ReadMap> {
    // A raw map lends no reference by itself (`MmapRaw` has inherent `as_ptr`/`len`, no
    // `Deref` to a whole-map slice): references are made in `bytes` alone, under its proof.
    let map = MmapOptions::new()
        .offset(offset)
        .len(len)
        .map_raw_read_only(file)?;
    Ok(ReadMap {
        map,
        sealed: sealed_for_good(file),
    })
}

/// `[offset, offset + len)` of `file`, shared and writable (`MAP_SHARED`): writes reach the
/// file and every other process mapping it.
pub(crate) fn map_write(file: &File, offset: u64, len: usize) -> io::Result<WriteMap> {
    // A raw map, as in `map_read`; a file sealed for good cannot be mapped shared-writable,
    // so only a `Promise` makes references to it.
    let map = MmapOptions::new().offset(offset).len(len).map_raw(file)?;
    Ok(WriteMap {
        map: RawMap::Shared(map),
        sealed: false,
    })
}

/// The map behind a [`WriteMap`]: memmap2's raw shared map, or a private one made here
/// (memmap2 has no raw copy-on-write map). Neither hands out a reference: only addresses.
#[derive(Debug)]
enum RawMap {
    Shared(MmapRaw),
    Private(PrivateMap),
}

impl RawMap {
    fn as_ptr(&self) -> *const u8 {
        match self {
            RawMap::Shared(m) => m.as_ptr(),
            RawMap::Private(m) => m.as_mut_ptr(),
        }
    }

    fn as_mut_ptr(&self) -> *mut u8 {
        match self {
            RawMap::Shared(m) => m.as_mut_ptr(),
            RawMap::Private(m) => m.as_mut_ptr(),
        }
    }

    fn len(&self) -> usize {
        match self {
            RawMap::Shared(m) => m.len(),
            RawMap::Private(m) => m.len,
        }
    }

    fn advise(&self, advice: memmap2::Advice) -> io::Result<()> {
        match self {
            RawMap::Shared(m) => m.advise(advice),
            RawMap::Private(m) => m.advise(advice),
        }
    }
}

/// `MAP_PRIVATE`, readable and writable, of `len` bytes of a file from `offset` (any offset:
/// the map starts at the page below it), owned by this value and unmapped when it drops.
#[derive(Debug)]
struct PrivateMap {
    /// The start of the kernel's map (page aligned) and its length.
    base: NonNull<u8>,
    span: usize,
    /// `offset`'s distance from its page, and the bytes asked for after it.
    lead: usize,
    len: usize,
}

// SAFETY: a `PrivateMap` is an address range this process owns: it holds no reference and no
// thread-bound state, so moving or sharing the value between threads cannot race by itself
// (what is done with the addresses is `WriteMap`'s business, under its own proofs).
unsafe impl Send for PrivateMap {}
// SAFETY: as for `Send`: `&PrivateMap` gives only addresses and lengths.
unsafe impl Sync for PrivateMap {}

impl PrivateMap {
    fn new(file: &File, offset: u64, len: usize) -> io::Result<PrivateMap> {
        let page = rustix::param::page_size() as u64;
        let lead = offset % page;
        let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "map larger than memory");
        let span = usize::try_from(lead)
            .ok()
            .and_then(|l| l.checked_add(len.max(1)))
            .ok_or_else(too_big)?;
        // SAFETY: a new map at an address the kernel picks (no hint, no `MAP_FIXED`), so it
        // replaces no memory of this process; nothing refers to it yet.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                span,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
                file,
                offset - lead,
            )
        }?;
        Ok(PrivateMap {
            base: NonNull::new(base.cast()).ok_or_else(too_big)?,
            span,
            lead: lead as usize,
            len,
        })
    }

    fn as_mut_ptr(&self) -> *mut u8 {
        self.base.as_ptr().wrapping_add(self.lead)
    }

    fn advise(&self, advice: memmap2::Advice) -> io::Result<()> {
        let advice = match advice {
            memmap2::Advice::HugePage => rustix::mm::Advice::LinuxHugepage,
            _ => return Err(io::Error::from(io::ErrorKind::Unsupported)),
        };
        // SAFETY: `MADV_HUGEPAGE` on the range this value mapped: a hint that changes no
        // byte of it.
        unsafe { rustix::mm::madvise(self.base.as_ptr().cast(), self.span, advice) }
            .map_err(io::Error::from)
    }
}

impl Drop for PrivateMap {
    fn drop(&mut self) {
        // SAFETY: exactly the range this value mapped, once: its addresses are used only
        // through borrows of the `WriteMap` that owns it, which end before it drops.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.span) };
    }
}

/// `[offset, offset + len)` of `file`, private copy-on-write (`MAP_PRIVATE`): writes stay in
/// this process. Not a private copy: pages this process has not written still show later
/// writes to the file, so it lends references only when the file is sealed for good.
pub(crate) fn map_private(file: &File, offset: u64, len: usize) -> io::Result<WriteMap> {
    // Made here, not by memmap2 (whose copy-on-write map is an `MmapMut`, a `Deref` to the
    // bytes): a `PrivateMap` hands out addresses only.
    Ok(WriteMap {
        map: RawMap::Private(PrivateMap::new(file, offset, len)?),
        sealed: sealed_for_good(file),
    })
}

impl ReadMap {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The address of the first byte.
    pub(crate) fn addr(&self) -> usize {
        self.map.as_ptr() as usize
    }

    /// Whether the mapped file is sealed for good (the kernel's word, not a promise).
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// `madvise` with a non-destructive advice (e.g. huge pages): contents are unchanged.
    pub(crate) fn advise(&self, advice: memmap2::Advice) -> io::Result<()> {
        self.map.advise(advice)
    }

    /// The bytes, for raw access.
    pub(crate) fn volatile(&self) -> VolatileBytes<'_> {
        // SAFETY: the map is `len` readable bytes and stays mapped while `self` is borrowed.
        unsafe { VolatileBytes::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    /// The bytes as a slice, if nobody can change them: the file is sealed for good, or
    /// `promise` is the caller's promise for this map.
    pub(crate) fn bytes(&self, promise: Option<&Promise>) -> Option<&[u8]> {
        if !(self.sealed || Promise::covers(promise, self.addr())) {
            return None;
        }
        // SAFETY: `len` readable bytes, mapped while `self` is borrowed. They cannot change
        // meanwhile: the file was sealed for good (the kernel refuses every writer and
        // shrinking from then on, `sealed_for_good`), or the caller promised it for this map
        // in an `unsafe fn` (`Promise::for_map`; `covers` checks the map).
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) })
    }
}

impl WriteMap {
    /// The address of the first byte.
    pub(crate) fn addr(&self) -> usize {
        self.map.as_ptr() as usize
    }

    /// Whether the mapped file is sealed for good (`c` maps only).
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// `madvise` with a non-destructive advice (e.g. huge pages): contents are unchanged.
    pub(crate) fn advise(&self, advice: memmap2::Advice) -> io::Result<()> {
        self.map.advise(advice)
    }

    pub(crate) fn volatile(&self) -> VolatileBytes<'_> {
        // SAFETY: the map is `len` readable bytes and stays mapped while `self` is borrowed.
        unsafe { VolatileBytes::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    pub(crate) fn volatile_mut(&mut self) -> VolatileBytesMut<'_> {
        // SAFETY: the map is `len` readable and writable bytes, mapped while `self` is
        // borrowed. No reference to them is used while the handle lives: this map lends one
        // only through `bytes`/`bytes_mut`, which the exclusive borrow excludes. Other writers
        // (other maps of the file, other processes) may change the bytes meanwhile: the
        // handle's invariant allows that.
        unsafe { VolatileBytesMut::from_raw_parts(self.map.as_mut_ptr(), self.map.len()) }
    }

    /// As [`ReadMap::bytes`].
    pub(crate) fn bytes(&self, promise: Option<&Promise>) -> Option<&[u8]> {
        if !(self.sealed || Promise::covers(promise, self.addr())) {
            return None;
        }
        // SAFETY: as in `ReadMap::bytes`; this process writes the map only through
        // `&mut self`, which the borrow excludes.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) })
    }

    /// As [`ReadMap::bytes`], writable: a `c` map of a sealed file is this process's own
    /// (writes stay private, and nobody can write the file), an `r+` one needs the promise.
    pub(crate) fn bytes_mut(&mut self, promise: Option<&Promise>) -> Option<&mut [u8]> {
        if !(self.sealed || Promise::covers(promise, self.addr())) {
            return None;
        }
        // SAFETY: as in `bytes`: sealed for good (no writer of the file anywhere, and a `c`
        // map's written pages are its own) or promised (no other map, handle or process
        // writes them). The map is writable (`r+` or `c`) and borrowed mutably for the
        // slice's life, so nothing else reaches it through this map meanwhile.
        Some(unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr(), self.map.len()) })
    }
}

fn nonnull(p: *mut u8) -> NonNull<u8> {
    NonNull::new(p).unwrap_or(NonNull::dangling())
}

/// Whether a handle whose range is `len` bytes, allowed `lo..hi` (`hi ≤ len`) and inside the
/// elements every one of `parts` admits, may touch `off .. off + n`. No byte is touched when
/// `n` is 0: then only `off ≤ len` is asked, so that `ptr + off` stays in the range.
#[inline(always)]
fn allowed(len: usize, lo: usize, hi: usize, parts: &[Part], off: usize, n: usize) -> bool {
    let Some(end) = off.checked_add(n) else {
        return false;
    };
    if n == 0 {
        return off <= len;
    }
    off >= lo && end <= hi && parts.iter().all(|p| p.covers(off as u64, n as u64))
}

/// Bytes that may change behind this process's back (or any bytes, viewed that way): read
/// only through raw pointers, one volatile access per element, never as a reference.
///
/// Invariant: `ptr .. ptr + len` is readable for `'a` (it is a live map or borrowed memory);
/// `lo ≤ hi ≤ len`. Reads touch only bytes [`allowed`] (the bytes of a handle split from a
/// writer: [`split_disjoint`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct VolatileBytes<'a> {
    ptr: NonNull<u8>,
    len: usize,
    lo: usize,
    hi: usize,
    parts: &'a [Part],
    _life: PhantomData<&'a [u8]>,
}

// SAFETY: `VolatileBytes` only reads, through raw volatile loads and copies into memory the
// caller owns; reads from several threads at once are not data races.
unsafe impl Send for VolatileBytes<'_> {}
// SAFETY: as above; `&VolatileBytes` allows nothing but reads.
unsafe impl Sync for VolatileBytes<'_> {}

/// Bytes this handle may write (and read) through raw pointers only.
///
/// Invariant: `ptr .. ptr + len` is readable and writable for `'a`; `lo ≤ hi ≤ len`; and no
/// reference to those bytes is used during `'a`. Other raw accesses (other handles, other
/// maps of the same file in this process, other processes) may read and change them at any
/// time: each access of the handle is one volatile access or a copy to or from a live
/// borrow, checked to touch only bytes [`allowed`] by `lo`, `hi` and `parts` (module docs).
/// Two handles split from one ([`split_disjoint`]) are allowed disjoint bytes.
#[derive(Debug)]
pub(crate) struct VolatileBytesMut<'a> {
    ptr: NonNull<u8>,
    len: usize,
    lo: usize,
    hi: usize,
    parts: Vec<Part>,
    _life: PhantomData<&'a mut [u8]>,
}

// SAFETY: the handle is raw pointers and bounds; its invariant (the range readable and
// writable for 'a, no reference to it in use) holds on every thread, and its accesses are
// volatile ones that other writers may race on any thread (module docs). It is not `Sync`,
// so that one handle's accesses stay on one thread (split it to share the work).
unsafe impl Send for VolatileBytesMut<'_> {}

impl<'a> VolatileBytes<'a> {
    /// The raw handle to `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr .. ptr + len` is readable for all of `'a` (the type invariant).
    unsafe fn from_raw_parts(ptr: *const u8, len: usize) -> Self {
        VolatileBytes {
            ptr: nonnull(ptr.cast_mut()),
            len,
            lo: 0,
            hi: len,
            parts: &[],
            _life: PhantomData,
        }
    }

    /// Borrowed memory, viewed raw (what a `View` made from a slice lends its volatile twin).
    pub(crate) fn from_slice(s: &'a [u8]) -> Self {
        // SAFETY: a slice borrowed for 'a is readable for 'a.
        unsafe { VolatileBytes::from_raw_parts(s.as_ptr(), s.len()) }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The `len` bytes from `start` (clamped to what is there), as a handle of its own. For
    /// the whole of a map; a handle split from a writer gets an empty window (its parts are
    /// placed in its own range).
    pub(crate) fn window(self, start: usize, len: usize) -> VolatileBytes<'a> {
        let start = start.min(self.len);
        let len = len.min(self.len - start);
        // SAFETY: `start ≤ self.len`, so the pointer stays inside (or one past) the range.
        let ptr = unsafe { self.ptr.as_ptr().add(start) };
        // SAFETY: `start + len ≤ self.len`: the window lies inside this handle's range, which
        // is readable for 'a (type invariant).
        let mut w = unsafe { VolatileBytes::from_raw_parts(ptr, len) };
        if self.parts.is_empty() {
            w.lo = self.lo.saturating_sub(start).min(len);
            w.hi = self.hi.saturating_sub(start).clamp(w.lo, len);
        } else {
            w.hi = 0;
        }
        w
    }

    /// The address of the first byte (for alignment checks).
    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// The first byte, as a raw pointer (never dereferenced outside this module).
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    #[inline(always)]
    fn allows(&self, off: usize, n: usize) -> bool {
        allowed(self.len, self.lo, self.hi, self.parts, off, n)
    }

    /// The `T` at byte `off`, if `off .. off + size_of::<T>()` is inside and allowed.
    #[inline(always)]
    pub(crate) fn read<T: Pod>(&self, off: usize) -> Option<T> {
        if size_of::<T>() == 0 || !self.allows(off, size_of::<T>()) {
            return None;
        }
        // SAFETY: `off + size_of::<T>() ≤ hi ≤ len` (`allows`), so the bytes are inside the
        // readable range (type invariant); `ptr + off` cannot wrap for the same reason.
        let p = unsafe { self.ptr.as_ptr().add(off) };
        Some(read_at::<T>(p))
    }

    /// Folds `f` over the `n` consecutive `T`s from byte `off` (one volatile read each, the
    /// bounds checked once); `Err(init)` untouched if they are not all inside and allowed, or
    /// not aligned.
    #[inline]
    pub(crate) fn fold_run<T: Pod, B>(
        &self,
        off: usize,
        n: usize,
        init: B,
        mut f: impl FnMut(B, T) -> B,
    ) -> Result<B, B> {
        let bytes = n.checked_mul(size_of::<T>());
        if !bytes.is_some_and(|b| b > 0 && self.allows(off, b)) {
            return Err(init);
        }
        // SAFETY: `off + n·size ≤ hi ≤ len` (`allows`): inside the readable range.
        let p = unsafe { self.ptr.as_ptr().add(off) }.cast::<T>();
        if !(p as usize).is_multiple_of(align_of::<T>()) {
            return Err(init);
        }
        let mut acc = init;
        for i in 0..n {
            // SAFETY: element `i < n` lies in the allowed run, inside the readable range; `p`
            // is aligned (checked) and so is every `p + i`; every bit pattern is a `T` (`Pod`).
            acc = f(acc, unsafe { p.add(i).read_volatile() });
        }
        Ok(acc)
    }

    /// Copies `dst.len()` bytes from byte `off` into `dst`; `None` if they are not all inside
    /// and allowed.
    pub(crate) fn copy_to(&self, off: usize, dst: &mut [u8]) -> Option<()> {
        if !self.allows(off, dst.len()) {
            return None;
        }
        // SAFETY: the source range is inside the readable range (`allows`; for no bytes,
        // `off ≤ len`); `dst` is a unique borrow of memory this process owns, so the two
        // cannot overlap with a reference in use. No reference to the source is made.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        };
        Some(())
    }
}

/// One volatile read of a `T` at `p`, whole if aligned, byte by byte if not.
#[inline(always)]
fn read_at<T: Pod>(p: *const u8) -> T {
    if (p as usize).is_multiple_of(align_of::<T>()) {
        // SAFETY: the callers checked that `p .. p + size_of::<T>()` is readable; it is
        // aligned (checked above); every bit pattern is a valid `T` (`Pod`).
        unsafe { p.cast::<T>().read_volatile() }
    } else {
        let mut v = T::zeroed();
        for (i, b) in bytemuck::bytes_of_mut(&mut v).iter_mut().enumerate() {
            // SAFETY: byte `i` of the readable range checked by the caller.
            *b = unsafe { p.add(i).read_volatile() };
        }
        v
    }
}

impl<'a> VolatileBytesMut<'a> {
    /// The raw writing handle to `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr .. ptr + len` is readable and writable for all of `'a`, and no reference to those
    /// bytes is used during `'a` (the type invariant).
    unsafe fn from_raw_parts(ptr: *mut u8, len: usize) -> Self {
        // SAFETY: the caller's promise is the invariant for the whole range, all allowed.
        unsafe { VolatileBytesMut::with_bounds(nonnull(ptr), len, 0, len, Vec::new()) }
    }

    /// The raw writing handle to `len` bytes at `ptr`, allowed the bytes `lo..hi` (clamped to
    /// `..len`) and inside every one of `parts`.
    ///
    /// # Safety
    /// The type invariant for the handle made: `ptr .. ptr + len` is readable and writable
    /// for all of `'a`, and no reference to those bytes is used during `'a`.
    unsafe fn with_bounds(
        ptr: NonNull<u8>,
        len: usize,
        lo: usize,
        hi: usize,
        parts: Vec<Part>,
    ) -> Self {
        let hi = hi.min(len);
        VolatileBytesMut {
            ptr,
            len,
            lo: lo.min(hi),
            hi,
            parts,
            _life: PhantomData,
        }
    }

    /// Borrowed memory, written raw.
    pub(crate) fn from_slice(s: &'a mut [u8]) -> Self {
        // SAFETY: a slice borrowed mutably for 'a is readable and writable for 'a, and the
        // borrow keeps any other reference to it out of use meanwhile.
        unsafe { VolatileBytesMut::from_raw_parts(s.as_mut_ptr(), s.len()) }
    }

    /// A shorter-lived handle to the same bytes.
    pub(crate) fn reborrow(&mut self) -> VolatileBytesMut<'_> {
        let (lo, hi, parts) = (self.lo, self.hi, self.parts.clone());
        // SAFETY: the same range and allowed bytes as `self`, whose invariant holds for 'a,
        // longer than the reborrow.
        unsafe { VolatileBytesMut::with_bounds(self.ptr, self.len, lo, hi, parts) }
    }

    /// Read access for as long as this handle is borrowed (to the same allowed bytes).
    pub(crate) fn volatile(&self) -> VolatileBytes<'_> {
        VolatileBytes {
            ptr: self.ptr,
            len: self.len,
            lo: self.lo,
            hi: self.hi,
            parts: &self.parts,
            _life: PhantomData,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    #[inline(always)]
    fn allows(&self, off: usize, n: usize) -> bool {
        allowed(self.len, self.lo, self.hi, &self.parts, off, n)
    }

    #[inline(always)]
    pub(crate) fn read<T: Pod>(&self, off: usize) -> Option<T> {
        self.volatile().read(off)
    }

    /// Writes `v` at byte `off` (one volatile store if aligned); `None` if it is not inside
    /// and allowed.
    #[inline(always)]
    pub(crate) fn write<T: Pod>(&mut self, off: usize, v: T) -> Option<()> {
        if size_of::<T>() == 0 || !self.allows(off, size_of::<T>()) {
            return None;
        }
        // SAFETY: inside the writable range (`allows`: `off + size ≤ hi ≤ len`).
        let p = unsafe { self.ptr.as_ptr().add(off) };
        if (p as usize).is_multiple_of(align_of::<T>()) {
            // SAFETY: inside the writable range, aligned (checked): one volatile store of a
            // `T`, to bytes no reference is in use for (type invariant); any bytes are a
            // valid `T` for later readers.
            unsafe { p.cast::<T>().write_volatile(v) };
        } else {
            for (i, b) in bytemuck::bytes_of(&v).iter().enumerate() {
                // SAFETY: byte `i` of the allowed, writable range checked above.
                unsafe { p.add(i).write_volatile(*b) };
            }
        }
        Some(())
    }

    /// The aligned start of `n` consecutive `T`s from byte `off`, if all are inside and
    /// allowed.
    fn run<T: Pod>(&mut self, off: usize, n: usize) -> Option<*mut T> {
        let bytes = n.checked_mul(size_of::<T>())?;
        if bytes == 0 || !self.allows(off, bytes) {
            return None;
        }
        // SAFETY: `off + bytes ≤ hi ≤ len` (`allows`): inside the writable range.
        let p = unsafe { self.ptr.as_ptr().add(off) }.cast::<T>();
        (p as usize).is_multiple_of(align_of::<T>()).then_some(p)
    }

    /// Writes `f()` to the `n` consecutive `T`s from byte `off` (one volatile store each, the
    /// bounds checked once); `None` (and nothing written) if they are not all inside and
    /// allowed, or not aligned.
    #[inline]
    pub(crate) fn fill_run<T: Pod>(
        &mut self,
        off: usize,
        n: usize,
        mut f: impl FnMut() -> T,
    ) -> Option<()> {
        let p = self.run::<T>(off, n)?;
        for i in 0..n {
            // SAFETY: element `i < n` lies inside the run `run` checked to be in the
            // writable range, with no reference in use (type invariant); `p + i` is aligned:
            // one volatile store of a `T`.
            unsafe { p.add(i).write_volatile(f()) };
        }
        Some(())
    }

    /// Replaces each of the `n` consecutive `T`s from byte `off` by `f` of it (a volatile
    /// read and store each); `None` (and nothing touched) as for [`fill_run`](Self::fill_run).
    #[inline]
    pub(crate) fn update_run<T: Pod>(
        &mut self,
        off: usize,
        n: usize,
        mut f: impl FnMut(T) -> T,
    ) -> Option<()> {
        let p = self.run::<T>(off, n)?;
        for i in 0..n {
            // SAFETY: as in `fill_run`; every bit pattern read is a valid `T` (`Pod`).
            unsafe {
                let e = p.add(i);
                e.write_volatile(f(e.read_volatile()));
            }
        }
        Some(())
    }

    /// Copies `src` to byte `off`; `None` if it is not all inside and allowed.
    pub(crate) fn copy_from(&mut self, off: usize, src: &[u8]) -> Option<()> {
        if !self.allows(off, src.len()) {
            return None;
        }
        // SAFETY: the destination is inside the writable range (`allows`; for no bytes, `off
        // ≤ len`), where no reference is in use (type invariant), so it cannot overlap `src`,
        // a reference in use.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(off), src.len())
        };
        Some(())
    }
}

/// The elements of a layout whose elements never share a byte, cut to the indices `lo..hi`
/// of one axis: the bytes a writer split along that axis may touch ([`split_disjoint`]).
///
/// Made only by [`Part::new`], which checks that no two elements share a byte; the parts
/// of one layout and axis with disjoint index ranges then admit disjoint bytes.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    /// The axes of length 2 or more, outermost (largest |stride|) first.
    axes: Vec<PartAxis>,
    /// Offset of the lowest byte of any element (the layout's span start).
    base: u64,
    itemsize: u64,
    /// The cut axis's indices admitted.
    lo: u64,
    hi: u64,
    /// Nothing is admitted: the layout is empty, or the cut axis has length 1 and its index
    /// 0 is not in `lo..hi`.
    none: bool,
}

#[derive(Clone, Copy, Debug)]
struct PartAxis {
    stride: u64,
    len: u64,
    /// The stride is negative: the index counts down from the lowest address.
    down: bool,
    /// The cut axis.
    cut: bool,
}

impl Part {
    /// The elements of `layout` whose index on `axis` lies in `lo..hi`. `None` if `axis` is
    /// not one, or if two elements of `layout` may share a byte: sorted by |stride|, every
    /// axis must step past all the bytes the axes inside it reach (so each byte belongs to
    /// one element at most, and [`Part::element_end`] finds it by division).
    fn new(layout: &Layout, axis: usize, lo: u64, hi: u64) -> Option<Part> {
        let cut_len = *layout.shape().get(axis)?;
        let itemsize = u64::from(layout.itemsize());
        if layout.is_empty() {
            return Some(Part {
                axes: Vec::new(),
                base: 0,
                itemsize,
                lo,
                hi,
                none: true,
            });
        }
        let mut axes: Vec<PartAxis> = layout
            .shape()
            .iter()
            .zip(layout.strides())
            .enumerate()
            .filter(|&(_, (&d, _))| d > 1)
            .map(|(k, (&d, &s))| PartAxis {
                stride: s.unsigned_abs(),
                len: d,
                down: s < 0,
                cut: k == axis,
            })
            .collect();
        axes.sort_unstable_by_key(|a| a.stride);
        let mut reach = itemsize;
        for a in &axes {
            if a.stride < reach || itemsize == 0 {
                return None;
            }
            reach = a.stride.checked_mul(a.len - 1)?.checked_add(reach)?;
        }
        axes.reverse();
        let none = cut_len == 1 && !(lo == 0 && hi >= 1);
        Some(Part {
            axes,
            base: layout.span().start,
            itemsize,
            lo,
            hi,
            none,
        })
    }

    /// The end of the admitted element that holds byte `at`, if one does: the axes from the
    /// outermost, each index the quotient of what is left by its stride (exact, since every
    /// axis steps past all the inner ones reach), the cut axis's index in `lo..hi`, and
    /// what is left inside one element.
    #[inline]
    fn element_end(&self, at: u64) -> Option<u64> {
        if self.none {
            return None;
        }
        let mut rel = at.checked_sub(self.base)?;
        for a in &self.axes {
            let q = rel / a.stride;
            if q >= a.len {
                return None;
            }
            // `q·stride ≤ rel`: no overflow.
            rel -= q * a.stride;
            if a.cut {
                let i = if a.down { a.len - 1 - q } else { q };
                if i < self.lo || i >= self.hi {
                    return None;
                }
            }
        }
        // `rel ≤ at`: the element starts at `at - rel`.
        (rel < self.itemsize).then(|| at - rel + self.itemsize)
    }

    /// Whether every byte of `off .. off + n` lies in an admitted element.
    fn covers(&self, off: u64, n: u64) -> bool {
        let Some(end) = off.checked_add(n) else {
            return false;
        };
        let mut at = off;
        while at < end {
            match self.element_end(at) {
                Some(e) => at = e,
                None => return false,
            }
        }
        true
    }
}

/// The byte range of `layout`'s elements in a handle's range, empty for no elements.
fn span_of(layout: &Layout) -> std::ops::Range<usize> {
    let s = layout.span();
    let start = usize::try_from(s.start).unwrap_or(usize::MAX);
    let end = usize::try_from(s.end).unwrap_or(usize::MAX);
    if layout.is_empty() {
        start..start
    } else {
        start..end.max(start)
    }
}

/// Splits a writer of the elements of `layout` along `axis` at index `at`: writers of the
/// indices before `at` and of those from it on, with their layouts ([`split_ranges`]).
pub(crate) fn split_disjoint<'a>(
    bytes: VolatileBytesMut<'a>,
    layout: &Layout,
    axis: usize,
    at: u64,
) -> Option<(VolatileBytesMut<'a>, Layout, VolatileBytesMut<'a>, Layout)> {
    let len = *layout.shape().get(axis)?;
    let mut halves = split_ranges(bytes, layout, axis, &[0, at.min(len), len])?.into_iter();
    let (ha, a) = halves.next()?;
    let (hb, b) = halves.next()?;
    Some((ha, a, hb, b))
}

/// Splits a writer of the elements of `layout` along `axis` into writers of the indices
/// `bounds[k] .. bounds[k + 1]`, with their layouts; `bounds` must not decrease and must end
/// at or below the axis's length. Either the pieces' spans do not meet, and each handle is
/// narrowed to its piece's span (no cost per access), or they interleave, and each handle
/// gets a [`Part`] of `layout` (a division per axis per access). `None` if pieces interleave
/// and elements of `layout` may share bytes, or `axis` or `bounds` is wrong.
pub(crate) fn split_ranges<'a>(
    bytes: VolatileBytesMut<'a>,
    layout: &Layout,
    axis: usize,
    bounds: &[u64],
) -> Option<Vec<(VolatileBytesMut<'a>, Layout)>> {
    let len = *layout.shape().get(axis)?;
    if bounds.windows(2).any(|w| w[0] > w[1]) || bounds.last().is_some_and(|&b| b > len) {
        return None;
    }
    let ranges: Vec<(u64, u64)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    let mut pieces = Vec::with_capacity(ranges.len());
    for &(lo, hi) in &ranges {
        let l = layout
            .slice_axis(
                axis,
                stridemap_core::Slice::range(i64::try_from(lo).ok()?, i64::try_from(hi).ok()?),
            )
            .ok()?;
        pieces.push(l);
    }
    let VolatileBytesMut {
        ptr,
        len: n,
        lo,
        hi,
        parts,
        ..
    } = bytes;
    // The pieces' windows inside `lo..hi`, in order of address, the empty ones left out
    // (they allow no byte).
    let windows: Vec<(usize, usize)> = pieces
        .iter()
        .map(|l| {
            let w = span_of(l);
            (w.start.max(lo), w.end.min(hi))
        })
        .collect();
    let mut sorted: Vec<(usize, usize)> = windows.iter().copied().filter(|w| w.0 < w.1).collect();
    sorted.sort_unstable();
    let apart = sorted.windows(2).all(|w| w[0].1 <= w[1].0);
    let mut bounds_and_parts = Vec::with_capacity(ranges.len());
    for (&(a, b), &w) in ranges.iter().zip(&windows) {
        if apart {
            bounds_and_parts.push((w, parts.clone()));
        } else {
            let mut p = parts.clone();
            p.push(Part::new(layout, axis, a, b)?);
            bounds_and_parts.push(((lo, hi), p));
        }
    }
    drop(parts);
    let mut out = Vec::with_capacity(pieces.len());
    for (((wlo, whi), p), l) in bounds_and_parts.into_iter().zip(pieces) {
        // SAFETY: every handle covers `bytes`'s range, readable and writable for 'a with no
        // reference in use (its invariant; `bytes` is consumed). Not a premise, but what the
        // split promises: each is allowed only bytes `bytes` was (its window inside
        // `lo..hi`, all of its parts kept), and any two disjoint ones: either all the non-empty
        // windows are apart (sorted and compared just above; an empty window allows no byte),
        // or each handle's last part is a `Part` of `layout` and `axis` for its own index
        // range `bounds[k]..bounds[k + 1]`, and these ranges are disjoint (`bounds` checked
        // not to decrease), while a part admits a byte only inside the one element holding
        // it (`Part::element_end`; `Part::new` checked that no two elements share a byte)
        // when that element's index is in its range. Neither rests on the
        // sub-layouts `pieces` (core's slicing): a wrong one could only make its view's
        // accesses fail.
        let h = unsafe { VolatileBytesMut::with_bounds(ptr, n, wlo, whi, p) };
        out.push((h, l));
    }
    Some(out)
}

/// A layout's elements as slots of a `[T]` of `len` elements, computed and checked here from
/// the layout's raw fields (shape, byte strides, byte offset) with checked arithmetic, so
/// that the views below rest on this module's checks, not on the layout's own methods.
#[derive(Debug)]
struct Slots {
    /// Per axis: length, and stride in slots (0 for axes of length 0 or 1, which never move).
    axes: Vec<(usize, isize)>,
    /// The slot of element `[0, …, 0]`.
    first: usize,
    /// The lowest and highest slot any element occupies (both `first` when there are none).
    #[cfg_attr(not(test), allow(dead_code))]
    lowest: usize,
    #[cfg_attr(not(test), allow(dead_code))]
    highest: usize,
    /// The number of elements.
    count: usize,
}

/// `layout`'s elements as slots of a `[T]` of `len` elements of `size` bytes: `None` unless
/// every offset is a whole number of slots, and every element's slot is below `len` (for no
/// elements, `first ≤ len`). Every element's slot is `first + Σ iₖ·strideₖ`, between
/// `lowest = first + Σ min(0, (dₖ−1)·strideₖ)` and `highest = first + Σ max(0, …)`.
fn slots(layout: &Layout, size: usize, len: usize) -> Option<Slots> {
    if size == 0 || layout.shape().len() != layout.strides().len() {
        return None;
    }
    let size_i = i128::try_from(size).ok()?;
    let offset = i128::from(layout.offset());
    if offset % size_i != 0 {
        return None;
    }
    let first = offset / size_i;
    // No element is reached when an axis is empty: then every stride is taken as 0.
    let empty = layout.shape().contains(&0);
    let (mut lowest, mut highest, mut count) = (first, first, 1usize);
    let mut axes = Vec::with_capacity(layout.shape().len());
    for (&d, &s) in layout.shape().iter().zip(layout.strides()) {
        let d = usize::try_from(d).ok()?;
        count = count.checked_mul(d)?;
        let s = if d > 1 && !empty { i128::from(s) } else { 0 };
        if s % size_i != 0 {
            return None;
        }
        let s = s / size_i;
        let reach = s.checked_mul(i128::try_from(d.saturating_sub(1)).ok()?)?;
        if reach < 0 {
            lowest = lowest.checked_add(reach)?;
        } else {
            highest = highest.checked_add(reach)?;
        }
        axes.push((d, isize::try_from(s).ok()?));
    }
    let len = i128::try_from(len).ok()?;
    let inside = if count == 0 {
        (lowest, highest) = (first, first);
        0 <= first && first <= len
    } else {
        0 <= lowest && highest < len
    };
    inside.then_some(())?;
    Some(Slots {
        axes,
        first: usize::try_from(first).ok()?,
        lowest: usize::try_from(lowest).ok()?,
        highest: usize::try_from(highest).ok()?,
        count,
    })
}

impl Slots {
    /// Whether no two elements share a slot: sorted by |stride|, every axis of length 2 or
    /// more steps past all the slots the axes inside it reach (so `Σ iₖ·strideₖ` is one to
    /// one). Conservative: some layouts of distinct elements are refused.
    fn distinct(&self) -> bool {
        if self.count == 0 {
            return true;
        }
        let mut axes: Vec<(usize, usize)> = self
            .axes
            .iter()
            .filter(|&&(d, _)| d > 1)
            .map(|&(d, s)| (d, s.unsigned_abs()))
            .collect();
        axes.sort_unstable_by_key(|&(_, s)| s);
        let mut reach = 1usize;
        for (d, s) in axes {
            if s < reach {
                return false;
            }
            let Some(r) = s.checked_mul(d - 1).and_then(|r| r.checked_add(reach)) else {
                return false;
            };
            reach = r;
        }
        true
    }
}

#[cfg(feature = "ndarray")]
pub(crate) use self::array::{array_view, array_view_mut};

#[cfg(feature = "ndarray")]
mod array {
    use ndarray::{ArrayViewD, ArrayViewMutD, Axis, IxDyn, ShapeBuilder};
    use stridemap_core::Layout;

    /// Shape, non-negative element strides, and the checked slots ([`super::Slots`]), plus
    /// the axes to invert afterwards to restore negative strides.
    struct Plan {
        shape: Vec<usize>,
        strides: Vec<usize>,
        lowest: usize,
        invert: Vec<usize>,
    }

    /// `None` unless [`super::slots`] accepts `layout` over `len` slots and the product of
    /// the non-zero lengths fits `isize` (ndarray's requirement), and, if `distinct`, unless
    /// [`super::Slots::distinct`] holds.
    fn plan(layout: &Layout, size: usize, len: usize, distinct: bool) -> Option<Plan> {
        let slots = super::slots(layout, size, len)?;
        if distinct && !slots.distinct() {
            return None;
        }
        let mut product = 1usize;
        for &(d, _) in &slots.axes {
            product = product.checked_mul(d.max(1))?;
        }
        isize::try_from(product.checked_mul(size)?).ok()?;
        if slots.count == 0 {
            // No element: C-order strides over the lengths (0 taken as 1), which reach no
            // slot but satisfy ndarray's checks of strides.
            let shape: Vec<usize> = slots.axes.iter().map(|&(d, _)| d).collect();
            let mut strides = vec![0; shape.len()];
            let mut step = 1usize;
            for (s, &d) in strides.iter_mut().zip(&shape).rev() {
                *s = step;
                step = step.checked_mul(d.max(1))?;
            }
            return Some(Plan {
                shape,
                strides,
                lowest: slots.first,
                invert: Vec::new(),
            });
        }
        let mut invert = Vec::new();
        for (k, &(_, s)) in slots.axes.iter().enumerate() {
            if s < 0 {
                invert.push(k);
            }
        }
        Some(Plan {
            shape: slots.axes.iter().map(|&(d, _)| d).collect(),
            strides: slots.axes.iter().map(|&(_, s)| s.unsigned_abs()).collect(),
            lowest: slots.lowest,
            invert,
        })
    }

    /// `layout` over `elems` as an ndarray view. `None` if a length does not fit `usize`, an
    /// offset is not a whole element, or an element lies outside `elems`.
    pub(crate) fn array_view<'a, T>(elems: &'a [T], layout: &Layout) -> Option<ArrayViewD<'a, T>> {
        let p = plan(layout, std::mem::size_of::<T>(), elems.len(), false)?;
        // SAFETY: `slots` (checked arithmetic, in this module) found every element's slot
        // `first + Σ iₖ·sₖ` inside `lowest ..= highest`, with `highest < len` and `lowest ≥
        // 0` when there are elements (else `lowest = first ≤ len`, and nothing is reached). With
        // the non-negative strides |sₖ| from slot `lowest`, ndarray reaches `lowest + Σ
        // iₖ·|sₖ| ≤ lowest + Σ (dₖ−1)·|sₖ| = highest`, and inverting an axis keeps each
        // element in that set: every element is a `T` of `elems`, whose byte size fits
        // isize; the product of the lengths fits isize (checked in `plan`). The slice is
        // borrowed for 'a and nothing mutates it through this view.
        let mut view = unsafe {
            ArrayViewD::from_shape_ptr(
                IxDyn(&p.shape).strides(IxDyn(&p.strides)),
                elems.as_ptr().add(p.lowest),
            )
        };
        for k in p.invert {
            view.invert_axis(Axis(k));
        }
        Some(view)
    }

    /// `layout` over `elems` as a mutable ndarray view; `None` also when two elements of
    /// `layout` may share a slot.
    pub(crate) fn array_view_mut<'a, T>(
        elems: &'a mut [T],
        layout: &Layout,
    ) -> Option<ArrayViewMutD<'a, T>> {
        let p = plan(layout, std::mem::size_of::<T>(), elems.len(), true)?;
        // SAFETY: as in `array_view`, every element is a `T` of `elems`; `elems` is borrowed
        // mutably for 'a, so nothing else aliases it, and no two elements share a slot
        // (`Slots::distinct`, checked in `plan`), so the view's `&mut` elements never alias.
        let mut view = unsafe {
            ArrayViewMutD::from_shape_ptr(
                IxDyn(&p.shape).strides(IxDyn(&p.strides)),
                elems.as_mut_ptr().add(p.lowest),
            )
        };
        for k in p.invert {
            view.invert_axis(Axis(k));
        }
        Some(view)
    }
}

/// The elements of a non-overlapping strided layout over `elems`, as `&mut T` in logical C
/// order: an odometer over the indices, each visited once.
#[derive(Debug)]
pub(crate) struct IterMut<'a, T> {
    ptr: NonNull<T>,
    len: usize,
    /// Per axis: length and stride in slots ([`Slots`]).
    axes: Vec<(usize, isize)>,
    index: Vec<usize>,
    /// The slot of the element at `index`.
    at: isize,
    /// Elements not yet handed out.
    left: usize,
    _life: PhantomData<&'a mut [T]>,
}

/// `None` if [`slots`] refuses `layout` over `elems` or two of its elements may share a slot
/// ([`Slots::distinct`]: they would alias).
pub(crate) fn iter_mut<'a, T>(elems: &'a mut [T], layout: &Layout) -> Option<IterMut<'a, T>> {
    let slots = slots(layout, size_of::<T>(), elems.len())?;
    if !slots.distinct() {
        return None;
    }
    Some(IterMut {
        ptr: NonNull::new(elems.as_mut_ptr()).unwrap_or(NonNull::dangling()),
        len: elems.len(),
        index: vec![0; slots.axes.len()],
        at: isize::try_from(slots.first).ok()?,
        left: slots.count,
        axes: slots.axes,
        _life: PhantomData,
    })
}

impl<'a, T> Iterator for IterMut<'a, T> {
    type Item = &'a mut T;

    fn next(&mut self) -> Option<&'a mut T> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let slot = usize::try_from(self.at).ok().filter(|&s| s < self.len)?;
        // The next index in C order; the slot follows it (wrapping arithmetic: a wrong value
        // is only ever refused by the check above).
        for (i, &(d, s)) in self.index.iter_mut().zip(&self.axes).rev() {
            *i += 1;
            if *i < d {
                self.at = self.at.wrapping_add(s);
                break;
            }
            *i = 0;
            self.at = self
                .at
                .wrapping_sub(s.wrapping_mul((d as isize).wrapping_sub(1)));
        }
        // SAFETY: `slot < len` (checked just above), so the element is inside `elems`, which
        // is borrowed mutably for 'a. `slot` is `first + Σ iₖ·strideₖ` for the current index
        // (kept so by the odometer), each index is visited once (`left` counts them), and
        // `Slots::distinct` (checked in `iter_mut`) makes that sum one to one, so no two
        // `&mut` handed out alias. Zero-sized `T` is refused by `slots`.
        Some(unsafe { &mut *self.ptr.as_ptr().add(slot) })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

impl<'a, T: crate::Element> crate::VolatileView<'a, T> {
    /// A volatile view of `layout` over `len` bytes at `ptr` that something else may change
    /// (e.g. a producer's own map of an `r+` output that consumers write).
    ///
    /// # Safety
    /// `ptr .. ptr + len` is readable for all of `'a` (e.g. a map that outlives `'a`), and
    /// this process makes no `&mut` reference to those bytes during `'a`.
    ///
    /// # Errors
    /// As [`VolatileView::new`](crate::VolatileView::new).
    pub unsafe fn from_raw_parts(
        ptr: *const u8,
        len: usize,
        layout: Layout,
    ) -> crate::ViewResult<crate::VolatileView<'a, T>> {
        // SAFETY: the caller's promise (readable for 'a) is `from_raw_parts`'s contract.
        let bytes = unsafe { VolatileBytes::from_raw_parts(ptr, len) };
        crate::VolatileView::with_source(bytes, layout, None)
    }
}

impl<'a, T: crate::Element> crate::VolatileViewMut<'a, T> {
    /// A writable volatile view of `layout` over `len` bytes at `ptr` that other processes
    /// may read and write meanwhile (a producer's own map of an `r+` output).
    ///
    /// # Safety
    /// `ptr .. ptr + len` is readable and writable for all of `'a`, and no reference to those
    /// bytes is used during `'a`. Raw accesses elsewhere (other processes, other maps or raw
    /// views in this one) may change them meanwhile: the view then reads other values, and
    /// elements written at once by two writers may be torn, never undefined behaviour.
    ///
    /// # Errors
    /// As [`VolatileViewMut::new`](crate::VolatileViewMut::new).
    pub unsafe fn from_raw_parts(
        ptr: *mut u8,
        len: usize,
        layout: Layout,
    ) -> crate::ViewResult<crate::VolatileViewMut<'a, T>> {
        // SAFETY: the caller's promise (readable and writable for 'a, no reference in use)
        // is `from_raw_parts`'s contract.
        let bytes = unsafe { VolatileBytesMut::from_raw_parts(ptr, len) };
        crate::VolatileViewMut::with_source(bytes, layout, None)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use stridemap_core::Layout;

    /// A copy-on-write map made here: at any offset (not a page boundary), reading the file's
    /// bytes, keeping its writes to itself, and gone from the process's maps once dropped.
    #[test]
    fn private_maps_start_anywhere_keep_their_writes_and_go_when_dropped() {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let fd =
            rustix::fs::memfd_create("stridemap-private-test", rustix::fs::MemfdFlags::CLOEXEC)
                .unwrap();
        let mut file = std::fs::File::from(fd);
        let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        let maps = || {
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .filter(|l| l.contains("stridemap-private-test"))
                .count()
        };
        let before = maps();
        let map = super::map_private(&file, 5000, 100).unwrap();
        assert_eq!(map.map.len(), 100);
        assert_eq!(maps(), before + 1);
        let p = map.map.as_mut_ptr();
        // SAFETY: `p` is the first of the map's 100 readable, writable bytes; no reference to
        // them exists; nothing else writes the file meanwhile.
        let (first, last) = unsafe { (p.read_volatile(), p.add(99).read_volatile()) };
        assert_eq!((first, last), (data[5000], data[5099]));
        // SAFETY: as above.
        unsafe { p.write_volatile(first.wrapping_add(1)) };
        let mut on_file = [0u8];
        file.read_exact_at(&mut on_file, 5000).unwrap();
        assert_eq!(
            on_file[0], data[5000],
            "a private map's write reached the file"
        );
        drop(map);
        assert_eq!(maps(), before, "the map outlived its value");
    }

    use super::{Part, VolatileBytesMut, slots, split_ranges};

    /// A layout as [`layout`] makes, its elements moved up by `shift` bytes (not always a
    /// whole element), over `len` slots of its itemsize (not always enough).
    fn placed() -> impl Strategy<Value = (Layout, usize)> {
        (layout(), 0u64..20, 0usize..80).prop_filter_map("fits", |(l, shift, len)| {
            let l = Layout::new(
                l.itemsize(),
                l.shape(),
                l.strides(),
                l.offset() + shift,
                1 << 13,
            )
            .ok()?;
            Some((l, len))
        })
    }

    /// The naive model: every element's slot in C order (offset plus the sum of index times
    /// stride, in bytes, divided by the itemsize), if each is whole and below `len` (for no
    /// elements: if the offset is whole and at most `len`).
    fn model_slots(l: &Layout, len: usize) -> Option<Vec<usize>> {
        let size = i128::from(l.itemsize());
        let offset = i128::from(l.offset());
        if indices(l.shape()).is_empty() {
            return (offset % size == 0 && offset / size <= len as i128).then(Vec::new);
        }
        indices(l.shape())
            .iter()
            .map(|ix| {
                let b = offset
                    + ix.iter()
                        .zip(l.strides())
                        .map(|(&i, &s)| i128::from(i) * i128::from(s))
                        .sum::<i128>();
                (b % size == 0 && b >= 0 && b / size < len as i128).then(|| (b / size) as usize)
            })
            .collect()
    }

    /// The slots `iter_mut` hands out over `len` `T`s, in order.
    fn iter_slots<T: Default + Clone>(l: &Layout, len: usize) -> Option<Vec<usize>> {
        let mut buf = vec![T::default(); len];
        let base = buf.as_ptr() as usize;
        let it = super::iter_mut(&mut buf, l)?;
        Some(
            it.map(|e| (e as *mut T as usize - base) / size_of::<T>())
                .collect(),
        )
    }

    fn all_distinct(v: &[usize]) -> bool {
        let mut w = v.to_vec();
        w.sort_unstable();
        w.windows(2).all(|p| p[0] != p[1])
    }

    /// `layout`'s elements through `array_view` (if `mutable`, `array_view_mut`) over `len`
    /// `T`s valued by slot, against the model.
    #[cfg(feature = "ndarray")]
    fn ndarray_matches<T: From<u8> + Copy + PartialEq + std::fmt::Debug>(
        l: &Layout,
        len: usize,
    ) -> Result<(), TestCaseError> {
        let value = |i: usize| T::from((i % 251) as u8);
        let mut buf: Vec<T> = (0..len).map(value).collect();
        let model = model_slots(l, len);
        let got: Option<Vec<T>> = super::array_view(&buf, l).map(|v| v.iter().copied().collect());
        match &model {
            Some(m) => {
                let want: Vec<T> = m.iter().map(|&k| buf[k]).collect();
                prop_assert_eq!(got, Some(want));
            }
            None => prop_assert!(got.is_none()),
        }
        let got_mut: Option<Vec<T>> =
            super::array_view_mut(&mut buf, l).map(|v| v.iter().copied().collect());
        if let Some(g) = got_mut {
            let m = model.unwrap_or_default();
            prop_assert!(all_distinct(&m), "a mutable view of shared slots: {:?}", l);
            let want: Vec<T> = m.iter().map(|&k| value(k)).collect();
            prop_assert_eq!(g, want);
        }
        Ok(())
    }

    /// A layout of up to 3 axes (lengths 0–4, strides any multiple of the itemsize, negative
    /// and zero included) over a buffer just large enough.
    fn layout() -> impl Strategy<Value = Layout> {
        let axis = (0u64..5, -6i64..7);
        (
            prop::sample::select(vec![1u32, 2, 4, 8]),
            prop::collection::vec(axis, 0..4),
        )
            .prop_filter_map("a layout inside its buffer", |(size, axes)| {
                let shape: Vec<u64> = axes.iter().map(|a| a.0).collect();
                let strides: Vec<i64> = axes.iter().map(|a| a.1 * i64::from(size)).collect();
                // The offset that puts the lowest element at 0.
                let low: i64 = axes
                    .iter()
                    .zip(&strides)
                    .map(|(a, &s)| {
                        if s < 0 && a.0 > 0 {
                            s * (a.0 as i64 - 1)
                        } else {
                            0
                        }
                    })
                    .sum();
                let offset = u64::try_from(-low).ok()?;
                Layout::new(size, &shape, &strides, offset, 1 << 12).ok()
            })
    }

    /// Every index of `shape`, in C order.
    fn indices(shape: &[u64]) -> Vec<Vec<u64>> {
        let mut out = vec![vec![]];
        for &d in shape {
            out = out
                .into_iter()
                .flat_map(|ix| {
                    (0..d).map(move |i| {
                        let mut ix = ix.clone();
                        ix.push(i);
                        ix
                    })
                })
                .collect();
        }
        out
    }

    /// The naive model: each element's index and first byte.
    fn elements(l: &Layout) -> Vec<(Vec<u64>, u64)> {
        indices(l.shape())
            .into_iter()
            .map(|ix| {
                let off = l.element_offset(&ix).unwrap();
                (ix, off)
            })
            .collect()
    }

    proptest! {
        /// `Part::new` accepts only layouts whose elements share no byte, and a part admits a
        /// byte range exactly when it lies inside one element whose index on the cut axis is
        /// in its range (so parts with disjoint ranges admit disjoint bytes).
        #[test]
        fn parts_admit_what_the_model_says(l in layout(), axis in 0usize..3, lo in 0u64..5, hi in 0u64..5) {
            let Some(part) = Part::new(&l, axis, lo, hi) else {
                // Refused: only when the axis is missing or two elements may share a byte.
                prop_assert!(axis >= l.ndim() || l.may_overlap());
                return Ok(());
            };
            prop_assert!(!l.may_overlap(), "core and the part disagree on {:?}", l);
            let size = u64::from(l.itemsize());
            let els = elements(&l);
            for (i, (_, a)) in els.iter().enumerate() {
                for (_, b) in &els[i + 1..] {
                    prop_assert!(a + size <= *b || b + size <= *a, "elements share a byte");
                }
            }
            for off in 0..l.span().end + 2 * size {
                for n in [1, size, 2 * size] {
                    let model = (off..off + n).all(|b| {
                        els.iter()
                            .any(|(ix, e)| *e <= b && b < e + size && (lo..hi).contains(&ix[axis]))
                    });
                    prop_assert_eq!(part.covers(off, n), model, "bytes {}..{}", off, off + n);
                }
            }
        }

        /// Split writers are allowed disjoint bytes, and each is allowed its own elements.
        #[test]
        fn split_pieces_are_allowed_disjoint_bytes(l in layout(), axis in 0usize..3, cut in 0u64..5) {
            if axis >= l.ndim() {
                return Ok(());
            }
            let len = l.shape()[axis];
            let bounds = [0, cut.min(len), len];
            let mut buf = vec![0u8; 1 << 12];
            let whole = VolatileBytesMut::from_slice(&mut buf);
            let Some(pieces) = split_ranges(whole, &l, axis, &bounds) else {
                prop_assert!(l.may_overlap());
                return Ok(());
            };
            let size = l.itemsize() as usize;
            for (k, (h, piece)) in pieces.iter().enumerate() {
                for ix in indices(piece.shape()) {
                    let off = piece.element_offset(&ix).unwrap() as usize;
                    prop_assert!(h.allows(off, size), "piece {} is refused its element", k);
                }
            }
            for off in 0..buf_len(&l) {
                let owners = pieces.iter().filter(|(h, _)| h.allows(off, 1)).count();
                prop_assert!(owners <= 1, "byte {} allowed to {} pieces", off, owners);
            }
        }
    }

    proptest! {
        /// `slots` accepts exactly the layouts whose elements are all whole slots inside,
        /// and finds their lowest and highest slot and count.
        #[test]
        fn slots_match_the_model((l, len) in placed()) {
            let size = l.itemsize() as usize;
            let got = slots(&l, size, len);
            let model = model_slots(&l, len);
            prop_assert_eq!(got.is_some(), model.is_some(), "{:?} over {}: {:?}", l, len, got);
            if let (Some(g), Some(m)) = (got, model) {
                prop_assert_eq!(g.count, m.len());
                prop_assert_eq!(g.first as u64 * l.itemsize() as u64, l.offset());
                if let (Some(&lo), Some(&hi)) = (m.iter().min(), m.iter().max()) {
                    prop_assert_eq!((g.lowest, g.highest), (lo, hi));
                }
            }
        }

        /// `distinct` accepts only layouts whose elements occupy distinct slots, and
        /// `iter_mut` visits exactly the model's slots, in C order.
        #[test]
        fn distinct_and_iter_mut_match_the_model((l, len) in placed()) {
            let size = l.itemsize() as usize;
            let model = model_slots(&l, len);
            if let Some(s) = slots(&l, size, len) {
                let m = model.clone().unwrap_or_default();
                if s.distinct() {
                    prop_assert!(all_distinct(&m), "shared slots accepted: {:?}", l);
                }
                // Contiguous layouts are accepted.
                if l.is_c_contiguous() {
                    prop_assert!(s.distinct(), "{:?} refused", l);
                }
            }
            let got = match size {
                1 => iter_slots::<u8>(&l, len),
                2 => iter_slots::<u16>(&l, len),
                4 => iter_slots::<u32>(&l, len),
                _ => iter_slots::<u64>(&l, len),
            };
            if let Some(g) = got {
                prop_assert_eq!(Some(g), model);
            } else {
                prop_assert!(model.is_none() || !slots(&l, size, len).unwrap().distinct());
            }
        }
    }

    #[cfg(feature = "ndarray")]
    proptest! {
        /// The ndarray views show the model's elements, in logical order.
        #[test]
        fn ndarray_views_match_the_model((l, len) in placed()) {
            match l.itemsize() {
                1 => ndarray_matches::<u8>(&l, len)?,
                2 => ndarray_matches::<u16>(&l, len)?,
                4 => ndarray_matches::<u32>(&l, len)?,
                _ => ndarray_matches::<u64>(&l, len)?,
            }
        }
    }

    fn buf_len(l: &Layout) -> usize {
        (l.span().end as usize + 16).min(1 << 12)
    }
}
