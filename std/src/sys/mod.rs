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

use self::split::slots;
pub(crate) use self::split::{Part, split_disjoint, split_ranges};

mod split;

#[cfg(feature = "ndarray")]
pub(crate) use self::array::{array_view, array_view_mut};

#[cfg(feature = "ndarray")]
mod array;

pub(crate) use self::iter::{IterMut, iter_mut};

mod iter;

#[cfg(test)]
mod tests;
