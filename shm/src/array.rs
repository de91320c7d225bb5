//! The producer's handles to shared arrays: writable ([`SharedArrayMut`], from
//! [`Pool::alloc`](crate::Pool::alloc)) and frozen ([`SharedArray`]).

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Weak};

use stridemap::{ByteView, Element, View, ViewMut};
use stridemap_core::{DType, Layout, Mode, ValidDescriptor};

use crate::huge::PageBacking;
use crate::pool::{PoolInner, release};
use crate::segment::{Backing, Segment};
use crate::{Error, Result, fdpass};

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
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(seg) = self.segment.take() {
            release(&self.pool, seg);
        }
    }
}

/// A shared array the producer can still write (in place, no copy): from
/// [`Pool::alloc`](crate::Pool::alloc), shared read-only after [`SharedArrayMut::freeze`];
/// from [`Pool::alloc_output`](crate::Pool::alloc_output), also shared `r+` with
/// [`SharedArrayMut::descriptor_rw`] (workers filling an output array).
#[derive(Debug)]
pub struct SharedArrayMut {
    lease: Lease,
    dtype: DType,
    layout: Layout,
    /// Made by `alloc_output`: consumers may map it `r+`.
    for_consumers: bool,
}

/// A frozen (read-only) shared array: cheap to clone; the segment is released when the last
/// clone is dropped, and deleted or recycled once no reader maps it either.
#[derive(Clone, Debug)]
pub struct SharedArray {
    lease: Arc<Lease>,
    dtype: DType,
    layout: Layout,
    desc: ValidDescriptor,
}

impl SharedArrayMut {
    pub(crate) fn new(
        lease: Lease,
        dtype: DType,
        layout: Layout,
        for_consumers: bool,
    ) -> SharedArrayMut {
        SharedArrayMut {
            lease,
            dtype,
            layout,
            for_consumers,
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
    pub fn page_backing(&self) -> Result<PageBacking> {
        Ok(self.lease.seg()?.page_backing())
    }

    /// A writable typed view of the array (the dtype must be `T`'s).
    pub fn view_mut<T: Element>(&mut self) -> Result<ViewMut<'_, T>> {
        check_dtype::<T>(self.dtype)?;
        let layout = self.layout;
        let data = self.lease.seg_mut()?.data_mut();
        Ok(ViewMut::new(data, layout)?)
    }

    /// A read-only typed view.
    pub fn view<T: Element>(&self) -> Result<View<'_, T>> {
        check_dtype::<T>(self.dtype)?;
        Ok(View::new(self.lease.seg()?.data(), self.layout)?)
    }

    /// The data bytes (the array packed in its order), writable.
    pub fn bytes_mut(&mut self) -> Result<&mut [u8]> {
        let n = self.layout.nbytes() as usize;
        self.lease
            .seg_mut()?
            .data_mut()
            .get_mut(..n)
            .ok_or(Error::PoolClosed)
    }

    /// A descriptor with mode `r+`: consumers that open it `r+` write into this array. Only
    /// for arrays from [`Pool::alloc_output`](crate::Pool::alloc_output)
    /// ([`Error::NotForConsumers`] otherwise).
    pub fn descriptor_rw(&self) -> Result<ValidDescriptor> {
        if !self.for_consumers {
            return Err(Error::NotForConsumers);
        }
        self.lease
            .seg()?
            .describe(self.dtype, &self.layout, Mode::ReadWrite)
    }

    /// Sends the `r+` descriptor (and, for a memfd, a writable fd of its own) over `stream`.
    pub fn send_rw(&self, stream: &UnixStream) -> Result<()> {
        send(self.lease.seg()?, &self.descriptor_rw()?, true, stream)
    }

    /// Makes the array read-only for every consumer (memfd: sealed against writes by the
    /// kernel; file: mode 0400) and returns the shareable handle.
    pub fn freeze(mut self) -> Result<SharedArray> {
        let seg = self.lease.seg_mut()?;
        seg.freeze()?;
        seg.refill_spare();
        let desc = seg.describe(self.dtype, &self.layout, Mode::ReadOnly)?;
        Ok(SharedArray {
            desc,
            dtype: self.dtype,
            layout: self.layout,
            lease: Arc::new(std::mem::replace(
                &mut self.lease,
                Lease {
                    segment: None,
                    pool: Weak::new(),
                },
            )),
        })
    }
}

impl SharedArray {
    /// The read-only descriptor to send to consumers.
    pub fn descriptor(&self) -> &ValidDescriptor {
        &self.desc
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A read-only typed view (the producer's own map).
    pub fn view<T: Element>(&self) -> Result<View<'_, T>> {
        check_dtype::<T>(self.dtype)?;
        Ok(View::new(self.lease.seg()?.data(), self.layout)?)
    }

    /// A byte view (the producer's own map).
    pub fn byte_view(&self) -> Result<ByteView<'_>> {
        Ok(ByteView::new(
            self.lease.seg()?.data(),
            self.layout,
            self.dtype,
        )?)
    }

    /// What backs the segment's pages: base pages or one of the huge page mechanisms
    /// ([`PoolConfig::huge_pages`](crate::PoolConfig::huge_pages)).
    pub fn page_backing(&self) -> Result<PageBacking> {
        Ok(self.lease.seg()?.page_backing())
    }

    /// Bytes of the producer's map of the segment that the kernel maps with huge pages now
    /// (from `/proc/self/smaps`; see [`huge_page_bytes`](crate::huge_page_bytes)).
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
    pub fn send(&self, stream: &UnixStream) -> Result<()> {
        self.send_view(stream, &self.desc)
    }

    /// Sends `desc`, a descriptor of a view of this array (e.g. from
    /// [`View::describe`](stridemap::View::describe) or a layout of
    /// [`SharedArray::descriptor`]), with the segment's fd for a memfd.
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use stridemap_shm::SharedArray;
    ///
    /// fn send_every_third_row(a: &SharedArray, to: &UnixStream) -> Result<(), Box<dyn std::error::Error>> {
    ///     let rows = a.descriptor().layout().slice_axis(0, stridemap_core::Slice::step(-3))?;
    ///     a.send_view(to, &a.descriptor().to_builder().layout(&rows).build()?)?;
    ///     Ok(())
    /// }
    /// ```
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
                let sent = fdpass::send(stream, desc, Some(std::os::fd::AsFd::as_fd(&fd)));
                // The next receiver's fd, made while this one maps.
                seg.refill_spare();
                sent
            }
            Backing::File(_) => fdpass::send(stream, desc, None),
        }
    }

    /// A read-only fd of the segment for a peer (a new open file description, SPEC.md §7):
    /// for passing it some other way than [`SharedArray::send`].
    pub fn fd_for_peer(&self) -> Result<std::os::fd::OwnedFd> {
        self.lease.seg()?.take_peer_fd()
    }
}

fn send(seg: &Segment, desc: &ValidDescriptor, writable: bool, stream: &UnixStream) -> Result<()> {
    match seg.backing {
        Backing::Memfd => {
            let fd = seg.fd_for_peer(writable)?;
            fdpass::send(stream, desc, Some(std::os::fd::AsFd::as_fd(&fd)))
        }
        Backing::File(_) => fdpass::send(stream, desc, None),
    }
}

fn check_dtype<T: Element>(have: DType) -> Result<()> {
    let want = T::dtype()?;
    if want != have {
        return Err(stridemap::Error::DtypeMismatch { have, want }.into());
    }
    Ok(())
}
