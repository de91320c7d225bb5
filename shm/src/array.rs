//! The producer's handles to shared arrays, one type per stage: filled in place by the
//! producer alone ([`SharedArrayMut`], from [`Pool::alloc`](crate::Pool::alloc)), frozen and
//! shared read-only ([`SharedArray`]), or shared for consumers to write ([`OutputArray`], from
//! [`Pool::alloc_output`](crate::Pool::alloc_output)).
//!
//! An output array lends no references to its bytes (consumers write them meanwhile):
//!
//! ```compile_fail,E0599
//! # fn f(pool: &stridemap_shm::Pool) -> stridemap_shm::Result<()> {
//! let mut out = pool.alloc_output::<f64>(&[4], stridemap::Order::C)?;
//! let v = out.view_mut()?; // no such method: use volatile_view_mut
//! # Ok(()) }
//! ```
//!
//! An array the producer fills lends no references either until it is frozen (any process of
//! this user may map its segment writable meanwhile, a memfd too, through `/proc/<pid>/fd`):
//!
//! ```compile_fail,E0599
//! # fn f(pool: &stridemap_shm::Pool) -> stridemap_shm::Result<()> {
//! let mut a = pool.alloc::<f64>(&[4], stridemap::Order::C)?;
//! let s: &mut [f64] = a.as_mut_slice()?; // no such method: copy_from_slice, fill, or freeze() first
//! # Ok(()) }
//! ```
//!
//! ```compile_fail,E0599
//! # fn f(pool: &stridemap_shm::Pool) -> stridemap_shm::Result<()> {
//! let a = pool.alloc::<f64>(&[4], stridemap::Order::C)?;
//! let v = a.view()?; // no such method: volatile_view, or freeze() first
//! # Ok(()) }
//! ```
//!
//! And it cannot reach a consumer before it is frozen or published:
//!
//! ```compile_fail,E0599
//! # fn f(pool: &stridemap_shm::Pool, s: &std::os::unix::net::UnixStream) -> stridemap_shm::Result<()> {
//! let a = pool.alloc::<f64>(&[4], stridemap::Order::C)?;
//! a.send(s)?; // no such method: freeze() first
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Weak};

use stridemap::{
    ByteView, DType, Element, Layout, Mode, ValidDescriptor, View, VolatileView, VolatileViewMut,
    socket,
};

use crate::huge::PageBacking;
use crate::pool::{PoolInner, release};
use crate::segment::{Backing, Segment};
use crate::{Error, Result};

/// The element type of a handle whose dtype is only known at run time (any dtype: big-endian,
/// `V` records, …). [`SharedArray::typed`] and friends check the dtype and name the type.
#[derive(Clone, Copy, Debug)]
pub enum Untyped {}

/// A segment in use by the producer; gives it back to the pool when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    segment: Option<Segment>,
    pool: Weak<PoolInner>,
}

impl Lease {
    pub(crate) fn new(segment: Segment, pool: Weak<PoolInner>) -> Lease {
        Lease {
            segment: Some(segment),
            pool,
        }
    }

    fn seg(&self) -> Result<&Segment> {
        self.segment.as_ref().ok_or(Error::PoolClosed)
    }

    fn seg_mut(&mut self) -> Result<&mut Segment> {
        self.segment.as_mut().ok_or(Error::PoolClosed)
    }

    fn take(&mut self) -> Lease {
        Lease {
            segment: self.segment.take(),
            pool: std::mem::take(&mut self.pool),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(seg) = self.segment.take() {
            release(&self.pool, seg);
        }
    }
}

/// A shared array the producer fills in place (no copy) before
/// [`freeze`](SharedArrayMut::freeze) shares it read-only (or
/// [`publish`](SharedArrayMut::publish) shares it unfrozen). It lends no references: until the
/// kernel has sealed the segment `F_SEAL_WRITE` at `freeze`, any process of this user (or
/// root) may map it writable (a named file by path, a memfd through `/proc/<pid>/fd`), and a
/// `&mut [T]` whose bytes another process changes is undefined behaviour. Fill it with
/// [`copy_from_slice`](SharedArrayMut::copy_from_slice) or [`fill`](SharedArrayMut::fill)
/// (one memcpy, no reference), or element by element through
/// [`volatile_view_mut`](SharedArrayMut::volatile_view_mut); then `freeze` and read the
/// frozen array through [`SharedArray::view`], which lends `&[T]`. A caller that can promise
/// no other process writes the segment meanwhile has the `unsafe`
/// [`as_mut_slice_unchecked`](SharedArrayMut::as_mut_slice_unchecked).
///
/// ```
/// use stridemap_shm::{Order, Pool, PoolConfig, SegmentKind};
/// let pool = Pool::with_config(PoolConfig::default().kind(SegmentKind::Memfd))?;
/// let mut a = pool.alloc::<f64>(&[2, 3], Order::C)?;
/// let data: Vec<f64> = (0..6).map(f64::from).collect();
/// a.copy_from_slice(&data)?;
/// let a = a.freeze()?; // a memfd sealed F_SEAL_WRITE: frozen, views lend references
/// assert_eq!(a.view()?.get(&[1, 2])?, &5.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A named file (the default pool) is never frozen (root can write 0400 files): after
/// `freeze` it is read through [`SharedArray::volatile_view`]. A named file truncated by
/// another process of this user meanwhile makes the producer's next access to the lost pages
/// (a fill, a volatile view) crash with `SIGBUS`, as on the consumers' side; a memfd cannot
/// be truncated (sealed against shrinking).
#[derive(Debug)]
pub struct SharedArrayMut<T = Untyped> {
    lease: Lease,
    dtype: DType,
    layout: Layout,
    _t: PhantomData<fn() -> T>,
}

/// A shared array that consumers write in place (`r+`: workers filling an output), from
/// [`Pool::alloc_output`](crate::Pool::alloc_output). Its bytes change under the producer's
/// feet, so it lends no references: read and write it through [`VolatileView`] /
/// [`VolatileViewMut`], which copy elements in and out.
#[derive(Debug)]
pub struct OutputArray<T = Untyped> {
    lease: Lease,
    dtype: DType,
    layout: Layout,
    _t: PhantomData<fn() -> T>,
}

/// A shared array that consumers read (from [`SharedArrayMut::freeze`],
/// [`SharedArrayMut::publish`] or [`Pool::share`](crate::Pool::share)): cheap to clone; the
/// segment is released when the last clone is dropped, and deleted or recycled once no reader
/// maps it either. Whether it is [frozen](SharedArray::is_frozen) (its bytes can never change
/// again, so [`view`](SharedArray::view) lends `&[T]`) is known at run time: only a memfd
/// that `freeze` (or `share`) sealed `F_SEAL_WRITE` is. A named file (read-only to consumers,
/// mode 0400, which root ignores) and a published memfd (the producer writes it again once
/// recycled) are read through [`volatile_view`](SharedArray::volatile_view).
#[derive(Debug)]
pub struct SharedArray<T = Untyped> {
    lease: Arc<Lease>,
    dtype: DType,
    layout: Layout,
    desc: ValidDescriptor,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for SharedArray<T> {
    fn clone(&self) -> Self {
        SharedArray {
            lease: self.lease.clone(),
            dtype: self.dtype,
            layout: self.layout,
            desc: self.desc.clone(),
            _t: PhantomData,
        }
    }
}

fn check_dtype<U: Element>(have: DType) -> Result<()> {
    let want = U::dtype()?;
    if want != have {
        return Err(stridemap::ViewError::DtypeMismatch { have, want }.into());
    }
    Ok(())
}

impl<T> SharedArrayMut<T> {
    pub(crate) fn new(lease: Lease, dtype: DType, layout: Layout) -> SharedArrayMut<T> {
        SharedArrayMut {
            lease,
            dtype,
            layout,
            _t: PhantomData,
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The array's layout in the segment's data area.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// What backs the segment's pages (see [`SharedArray::page_backing`]).
    ///
    /// # Errors
    /// [`Error::PoolClosed`] only if the segment is gone (never while the handle lives).
    pub fn page_backing(&self) -> Result<PageBacking> {
        Ok(self.lease.seg()?.page_backing())
    }

    /// Makes the array read-only for good and returns the shareable handle. A memfd is
    /// frozen: its writable map dropped, sealed `F_SEAL_WRITE` (and against resizing) by the
    /// kernel, mapped again read-only, so consumers' and the producer's views lend references
    /// ([`SharedArray::view`]); it is never written again, so never recycled. A named file
    /// gets mode 0400 but is not frozen (root opens it for writing): read it through
    /// [`SharedArray::volatile_view`]. For arrays streamed into recycled segments, see
    /// [`publish`](Self::publish).
    ///
    /// # Errors
    /// [`Error::Io`] if the kernel refuses the seal or the file's mode cannot be changed.
    pub fn freeze(self) -> Result<SharedArray<T>> {
        self.share_as(Segment::freeze)
    }

    /// Makes the array read-only for consumers without freezing it, so that its segment is
    /// recycled once nobody maps it: the fast path of a producer that streams new data every
    /// step. A memfd is sealed `F_SEAL_FUTURE_WRITE` (consumers can never write it; the
    /// producer's own map still can, for the next use), a named file gets mode 0400.
    /// Consumers and the producer read it through [`VolatileView`]s, which copy elements out.
    ///
    /// ```
    /// use stridemap_shm::{Order, Pool, PoolConfig, SegmentKind};
    /// let pool = Pool::with_config(PoolConfig::default().kind(SegmentKind::Memfd))?;
    /// let mut a = pool.alloc::<f64>(&[3], Order::C)?;
    /// a.copy_from_slice(&[1.0, 2.0, 3.0])?;
    /// let a = a.publish()?;
    /// assert!(!a.is_frozen());
    /// assert_eq!(a.volatile_view()?.to_vec(), [1.0, 2.0, 3.0]);
    /// assert!(a.view().is_err()); // no references into a segment that will be written again
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Unsupported`] if the kernel cannot seal (Linux < 5.1), [`Error::Io`] if the
    /// file's mode cannot be changed.
    pub fn publish(self) -> Result<SharedArray<T>> {
        self.share_as(Segment::publish)
    }

    fn share_as(mut self, how: fn(&mut Segment) -> Result<()>) -> Result<SharedArray<T>> {
        let seg = self.lease.seg_mut()?;
        how(seg)?;
        seg.refill_spare();
        let desc = seg.describe(self.dtype, &self.layout, Mode::ReadOnly)?;
        Ok(SharedArray {
            desc,
            dtype: self.dtype,
            layout: self.layout,
            lease: Arc::new(self.lease.take()),
            _t: PhantomData,
        })
    }

    /// The same array with its element type named (the dtype must be `U`'s).
    ///
    /// # Errors
    /// [`stridemap::ViewError::DtypeMismatch`] (inside [`Error::Stridemap`]).
    pub fn typed<U: Element>(mut self) -> Result<SharedArrayMut<U>> {
        check_dtype::<U>(self.dtype)?;
        Ok(SharedArrayMut::new(
            self.lease.take(),
            self.dtype,
            self.layout,
        ))
    }
}

impl<T: Element> SharedArrayMut<T> {
    /// Copies `src`, the elements in memory order (the array's order, C or F), into the
    /// array: one memcpy into the segment, lending no reference (the segment is not frozen
    /// yet: another process may map it writable meanwhile).
    ///
    /// Before, `as_mut_slice` lent a `&mut [f64]` of a memfd that another process had mapped
    /// writable through `/proc/<pid>/fd` before it was sealed, and changed under it. Now the
    /// producer writes through copies and reads only once frozen:
    ///
    /// ```
    /// use stridemap_shm::{Order, Pool, PoolConfig, SegmentKind};
    /// let pool = Pool::with_config(PoolConfig::default().kind(SegmentKind::Memfd))?;
    /// let mut a = pool.alloc::<f64>(&[3], Order::C)?;
    /// a.copy_from_slice(&[1.0, 2.0, 3.0])?;
    /// assert_eq!(a.volatile_view()?.to_vec(), [1.0, 2.0, 3.0]);
    /// assert_eq!(a.freeze()?.view()?.as_slice(), Some(&[1.0, 2.0, 3.0][..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`stridemap::ViewError::SliceLength`] (inside [`Error::Stridemap`]) if `src` does not
    /// have the array's number of elements.
    pub fn copy_from_slice(&mut self, src: &[T]) -> Result<()> {
        let n = self.layout.len();
        if src.len() as u64 != n {
            return Err(stridemap::ViewError::SliceLength {
                expected: n as usize,
                actual: src.len(),
            }
            .into());
        }
        let bytes: &[u8] = bytemuck::cast_slice(src);
        if !self.lease.seg_mut()?.write_data(0, bytes) {
            return Err(stridemap::ViewError::ReadOnly.into());
        }
        Ok(())
    }

    /// Sets every element to `value`: memcpys of a buffer of copies into the segment,
    /// lending no reference.
    ///
    /// # Errors
    /// [`Error::PoolClosed`] only if the segment is gone (never while the handle lives).
    pub fn fill(&mut self, value: T) -> Result<()> {
        const CHUNK: usize = 64 << 10;
        let size = std::mem::size_of::<T>().max(1);
        let total = usize::try_from(self.layout.nbytes()).unwrap_or(usize::MAX);
        let buf = vec![value; (CHUNK / size).max(1)];
        let buf: &[u8] = bytemuck::cast_slice(&buf);
        let seg = self.lease.seg_mut()?;
        let mut at = 0;
        while at < total {
            let k = buf.len().min(total - at);
            if !seg.write_data(at, &buf[..k]) {
                return Err(stridemap::ViewError::ReadOnly.into());
            }
            at += k;
        }
        Ok(())
    }

    /// A writable view that copies elements in and out and lends no reference: works on
    /// every segment, named files included.
    ///
    /// ```
    /// use stridemap_shm::{Order, Pool};
    /// let pool = Pool::new()?; // named files by default
    /// let mut a = pool.alloc::<f64>(&[2, 2], Order::C)?;
    /// a.volatile_view_mut()?.fill_with({ let mut i = 0.0; move || { i += 1.0; i } });
    /// assert_eq!(a.freeze()?.volatile_view()?.to_vec(), [1.0, 2.0, 3.0, 4.0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::PoolClosed`] only if the segment is gone (never while the handle lives).
    pub fn volatile_view_mut(&mut self) -> Result<VolatileViewMut<'_, T>> {
        let layout = self.layout;
        Ok(self.lease.seg_mut()?.output_view_mut(layout)?)
    }

    /// A read-only view that copies elements out and lends no reference.
    ///
    /// # Errors
    /// As [`volatile_view_mut`](Self::volatile_view_mut).
    pub fn volatile_view(&self) -> Result<VolatileView<'_, T>> {
        Ok(self.lease.seg()?.data_view(self.layout)?)
    }

    /// The segment, for `sys`'s unchecked slice.
    pub(crate) fn segment_mut(&mut self) -> Result<&mut Segment> {
        self.lease.seg_mut()
    }
}

impl<T> OutputArray<T> {
    pub(crate) fn new(lease: Lease, dtype: DType, layout: Layout) -> OutputArray<T> {
        OutputArray {
            lease,
            dtype,
            layout,
            _t: PhantomData,
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The array's layout in the segment's data area.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The descriptor with mode `r+`: consumers that open it `r+` write into this array.
    ///
    /// # Errors
    /// [`Error::Io`] for a segment path that is not UTF-8.
    pub fn descriptor(&self) -> Result<ValidDescriptor> {
        self.lease
            .seg()?
            .describe(self.dtype, &self.layout, Mode::ReadWrite)
    }

    /// Sends the `r+` descriptor (and, for a memfd, a writable fd of its own) over `stream`.
    ///
    /// # Errors
    /// [`Error::Io`] if the socket fails; those of [`descriptor`](Self::descriptor).
    pub fn send(&self, stream: &UnixStream) -> Result<()> {
        self.send_view(stream, &self.descriptor()?)
    }

    /// Sends `desc`, a descriptor of a view of this array (e.g. one worker's block of rows,
    /// from a layout of [`descriptor`](Self::descriptor)), with the segment's fd for a memfd:
    /// writable for an `r+` descriptor, read-only for an `r` one.
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use stridemap_shm::{Order, Pool, PoolConfig, SegmentKind, Slice};
    ///
    /// let pool = Pool::with_config(PoolConfig::default().kind(SegmentKind::Memfd))?;
    /// let out = pool.alloc_output::<f64>(&[4, 2], Order::C)?;
    /// // The worker that fills rows 2 and 3 gets those rows only, and a writable fd.
    /// let whole = out.descriptor()?;
    /// let rows = whole.layout().slice_axis(0, Slice::range(2, 4))?;
    /// let (tx, rx) = UnixStream::pair()?;
    /// out.send_view(&tx, &whole.to_builder().layout(&rows).build()?)?;
    /// let opts = stridemap_shm::OpenOptions::new().mode(stridemap_shm::Mode::ReadWrite);
    /// let mut m = opts.open(stridemap_shm::socket::recv(&rx)?)?;
    /// m.volatile_view_mut::<f64>()?.fill(7.0);
    /// assert_eq!(out.to_vec()?, [0.0, 0.0, 0.0, 0.0, 7.0, 7.0, 7.0, 7.0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NotThisSegment`] if `desc` is not a view of this segment's current use;
    /// [`Error::Io`] if the socket fails.
    pub fn send_view(&self, stream: &UnixStream, desc: &ValidDescriptor) -> Result<()> {
        let seg = self.lease.seg()?;
        let same = desc.segment_id() == Some(seg.id) && desc.generation() == seg.generation;
        if !same {
            return Err(Error::NotThisSegment);
        }
        match seg.backing {
            Backing::Memfd => {
                let fd = seg.fd_for_peer(desc.mode() == Mode::ReadWrite)?;
                Ok(socket::send(stream, desc, Some(fd.as_fd()))?)
            }
            Backing::File(_) => Ok(socket::send(stream, desc, None)?),
        }
    }

    /// A writable fd of the segment for a peer (a new open file description, SPEC.md §7):
    /// for passing it some other way than [`send`](Self::send), with the `r+`
    /// [`descriptor`](Self::descriptor).
    ///
    /// ```
    /// use stridemap_shm::{Order, Pool, PoolConfig, SegmentKind};
    /// let pool = Pool::with_config(PoolConfig::default().kind(SegmentKind::Memfd))?;
    /// let out = pool.alloc_output::<u32>(&[8], Order::C)?;
    /// let opts = stridemap_shm::OpenOptions::new().mode(stridemap_shm::Mode::ReadWrite);
    /// let mut m = opts.open((&out.descriptor()?, out.fd_for_peer()?))?;
    /// m.volatile_view_mut::<u32>()?.set(&[0], 5)?;
    /// assert_eq!(out.volatile_view()?.get(&[0])?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::TooManyFiles`] and other errors of reopening the segment.
    pub fn fd_for_peer(&self) -> Result<std::os::fd::OwnedFd> {
        self.lease.seg()?.fd_for_peer(true)
    }

    /// The same array with its element type named (the dtype must be `U`'s).
    ///
    /// # Errors
    /// [`stridemap::ViewError::DtypeMismatch`] (inside [`Error::Stridemap`]).
    pub fn typed<U: Element>(mut self) -> Result<OutputArray<U>> {
        check_dtype::<U>(self.dtype)?;
        Ok(OutputArray::new(self.lease.take(), self.dtype, self.layout))
    }
}

impl<T: Element> OutputArray<T> {
    /// A view that copies elements out (consumers may be writing them).
    ///
    /// # Errors
    /// [`Error::PoolClosed`] only if the segment is gone (never while the handle lives).
    pub fn volatile_view(&self) -> Result<VolatileView<'_, T>> {
        Ok(self.lease.seg()?.data_view(self.layout)?)
    }

    /// A view that copies elements in and out, beside the consumers' writes.
    ///
    /// # Errors
    /// As [`volatile_view`](Self::volatile_view).
    pub fn volatile_view_mut(&mut self) -> Result<VolatileViewMut<'_, T>> {
        let layout = self.layout;
        Ok(self.lease.seg_mut()?.output_view_mut(layout)?)
    }

    /// A C-ordered copy of the elements (e.g. once the workers answered).
    ///
    /// # Errors
    /// As [`volatile_view`](Self::volatile_view).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        Ok(self.volatile_view()?.to_vec())
    }
}

impl<T> SharedArray<T> {
    /// The lease every clone shares: dead once the last handle is dropped.
    pub(crate) fn lease_weak(&self) -> Weak<Lease> {
        Arc::downgrade(&self.lease)
    }

    /// The read-only descriptor to send to consumers.
    pub fn descriptor(&self) -> &ValidDescriptor {
        &self.desc
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A typed view of another element type `U` (the dtype must be `U`'s).
    ///
    /// # Errors
    /// [`stridemap::ViewError::DtypeMismatch`] (inside [`Error::Stridemap`]).
    pub fn view_as<U: Element>(&self) -> Result<View<'_, U>> {
        check_dtype::<U>(self.dtype)?;
        Ok(View::new(self.frozen_data()?, self.layout)?)
    }

    /// A byte view (the producer's own map), of a frozen array only.
    ///
    /// # Errors
    /// As [`view`](Self::view).
    pub fn byte_view(&self) -> Result<ByteView<'_>> {
        Ok(ByteView::new(self.frozen_data()?, self.layout, self.dtype)?)
    }

    /// Whether the array is frozen: a memfd sealed `F_SEAL_WRITE`, whose views lend
    /// references. Named files and [published](SharedArrayMut::publish) arrays are not.
    pub fn is_frozen(&self) -> bool {
        self.lease.seg().is_ok_and(Segment::is_frozen)
    }

    /// The data area, if frozen.
    fn frozen_data(&self) -> Result<&[u8]> {
        self.lease
            .seg()?
            .frozen_data()
            .ok_or(stridemap::ViewError::NotFrozen.into())
    }

    /// The same array with its element type named (the dtype must be `U`'s).
    ///
    /// # Errors
    /// [`stridemap::ViewError::DtypeMismatch`] (inside [`Error::Stridemap`]).
    pub fn typed<U: Element>(&self) -> Result<SharedArray<U>> {
        check_dtype::<U>(self.dtype)?;
        Ok(SharedArray {
            lease: self.lease.clone(),
            dtype: self.dtype,
            layout: self.layout,
            desc: self.desc.clone(),
            _t: PhantomData,
        })
    }

    /// What backs the segment's pages: base pages or one of the huge page mechanisms
    /// ([`PoolConfig::huge_pages`](crate::PoolConfig::huge_pages)).
    ///
    /// # Errors
    /// [`Error::PoolClosed`] only if the segment is gone (never while the handle lives).
    pub fn page_backing(&self) -> Result<PageBacking> {
        Ok(self.lease.seg()?.page_backing())
    }

    /// Bytes of the producer's map of the segment that the kernel maps with huge pages now
    /// (from `/proc/self/smaps`; see [`huge_page_bytes`](crate::huge_page_bytes)).
    ///
    /// # Errors
    /// [`Error::Io`] if `/proc/self/smaps` cannot be read.
    pub fn huge_page_bytes(&self) -> Result<u64> {
        self.lease.seg()?.huge_mapped().map_err(|e| Error::Io {
            context: "reading /proc/self/smaps".into(),
            source: e,
        })
    }

    /// Whether the segment is a memfd (consumers need the fd) rather than a named file.
    pub fn is_memfd(&self) -> bool {
        self.lease.seg().is_ok_and(|s| s.backing == Backing::Memfd)
    }

    /// Sends the descriptor (and, for a memfd, a read-only fd of its own) over `stream`.
    ///
    /// # Errors
    /// As [`send_view`](Self::send_view).
    pub fn send(&self, stream: &UnixStream) -> Result<()> {
        self.send_view(stream, &self.desc)
    }

    /// Sends `desc`, a descriptor of a view of this array (e.g. from
    /// [`View::describe`](stridemap::View::describe) or a layout of
    /// [`SharedArray::descriptor`]), with the segment's fd for a memfd.
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use stridemap_shm::{SharedArray, Slice};
    ///
    /// fn send_every_third_row(a: &SharedArray<f64>, to: &UnixStream) -> Result<(), Box<dyn std::error::Error>> {
    ///     let rows = a.descriptor().layout().slice_axis(0, Slice::step(-3))?;
    ///     a.send_view(to, &a.descriptor().to_builder().layout(&rows).build()?)?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotThisSegment`] if `desc` is not a read-only view of this segment's current
    /// use; [`Error::Io`] if the socket fails.
    pub fn send_view(&self, stream: &UnixStream, desc: &ValidDescriptor) -> Result<()> {
        let seg = self.lease.seg()?;
        let same = desc.segment_id() == self.desc.segment_id()
            && desc.generation() == self.desc.generation()
            && desc.mode() == Mode::ReadOnly;
        if !same {
            return Err(Error::NotThisSegment);
        }
        match seg.backing {
            Backing::Memfd => {
                let fd = seg.take_peer_fd()?;
                let sent = socket::send(stream, desc, Some(fd.as_fd()));
                // The next receiver's fd, made while this one maps.
                seg.refill_spare();
                Ok(sent?)
            }
            Backing::File(_) => Ok(socket::send(stream, desc, None)?),
        }
    }

    /// A read-only fd of the segment for a peer (a new open file description, SPEC.md §7):
    /// for passing it some other way than [`SharedArray::send`].
    ///
    /// # Errors
    /// [`Error::TooManyFiles`] and other errors of reopening the segment.
    pub fn fd_for_peer(&self) -> Result<std::os::fd::OwnedFd> {
        self.lease.seg()?.take_peer_fd()
    }
}

impl<T: Element> SharedArray<T> {
    /// A read-only typed view lending `&T`s, of a [frozen](Self::is_frozen) array (a memfd
    /// sealed for good, checked by the kernel: references are sound).
    ///
    /// A named file is not frozen, whatever its mode (issue 20: root opens 0400 files for
    /// writing), so this is refused at run time:
    ///
    /// ```
    /// use stridemap_shm::{Order, Pool, PoolConfig, SegmentKind};
    /// let pool = Pool::with_config(PoolConfig::default().kind(SegmentKind::File))?;
    /// let a = pool.alloc::<f64>(&[3], Order::C)?.freeze()?;
    /// assert!(matches!(
    ///     a.view(),
    ///     Err(stridemap_shm::Error::Stridemap(stridemap::Error::View(stridemap::ViewError::NotFrozen)))
    /// ));
    /// assert_eq!(a.volatile_view()?.to_vec(), [0.0; 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`stridemap::ViewError::NotFrozen`] (inside [`Error::Stridemap`]) unless frozen: use
    /// [`volatile_view`](Self::volatile_view).
    pub fn view(&self) -> Result<View<'_, T>> {
        Ok(View::new(self.frozen_data()?, self.layout)?)
    }

    /// A read-only view that copies elements out and lends no reference: works on every
    /// array, frozen or not.
    ///
    /// # Errors
    /// [`Error::PoolClosed`] only if the segment is gone (never while the handle lives).
    pub fn volatile_view(&self) -> Result<VolatileView<'_, T>> {
        Ok(self.lease.seg()?.data_view(self.layout)?)
    }
}
