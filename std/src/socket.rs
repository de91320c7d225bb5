//! Passing descriptors over a Unix stream socket (SPEC.md §6.1): fixed records back to back,
//! the segment's fd as SCM_RIGHTS on the same `sendmsg`, received close-on-exec.
//!
//! A producer [`send`]s; a consumer [`recv`]s an [`Incoming`] descriptor and opens it with
//! [`OpenOptions::open`] (by its fd if one came with it, else by its path).
//!
//! ```
//! use std::os::unix::net::UnixStream;
//! use stridemap::{Builder, DType, socket};
//!
//! let (tx, rx) = UnixStream::pair()?;
//! let desc = Builder::new(DType::parse("<f8")?, &[4]).path("/dev/shm/stridemap-x/a").build()?;
//! socket::send(&tx, &desc, None)?;
//! let got = socket::recv(&rx)?;
//! assert_eq!((&got.descriptor, got.fd.is_none()), (&desc, true));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use stridemap_core::{RECORD_LEN, ValidDescriptor, decode};

pub use crate::session::{Event, Session};
use crate::{Error, Mapping, OpenOptions, Result};

fn io(context: &str, e: impl Into<std::io::Error>) -> Error {
    Error::io(context, e.into())
}

/// A descriptor received from a peer, and the fd that came with it (close-on-exec): open it
/// with [`OpenOptions::open`] (by its fd if one came, kept open by the mapping while it
/// lives: it holds the segment lock of SPEC.md §7; else by its path).
///
/// ```
/// fn total(stream: &std::os::unix::net::UnixStream) -> Result<f64, stridemap::Error> {
///     let m = stridemap::OpenOptions::new().open(stridemap::socket::recv(stream)?)?;
///     Ok(m.volatile_view::<f64>()?.iter().sum())
/// }
/// ```
#[derive(Debug)]
pub struct Incoming {
    /// The descriptor, validated.
    pub descriptor: ValidDescriptor,
    /// The segment's fd, for a descriptor whose source is an fd.
    pub fd: Option<OwnedFd>,
}

impl Incoming {
    /// Opens the descriptor under `opts`.
    #[deprecated(note = "use OpenOptions::open, the one open: `opts.open(incoming)`")]
    #[doc(hidden)]
    pub fn open(self, opts: &OpenOptions) -> Result<Mapping> {
        opts.open(self)
    }
}

/// Sends `desc` (its fixed record) and, if given, `fd` over `stream`, the fd on the same
/// `sendmsg` as the record's first bytes.
///
/// # Errors
/// [`Error::Io`] if the socket fails.
pub fn send(stream: &UnixStream, desc: &ValidDescriptor, fd: Option<BorrowedFd<'_>>) -> Result<()> {
    let bytes = desc.to_bytes();
    let Some(fd) = fd else {
        // No ancillary data: a plain write (cheaper than sendmsg).
        return (&*stream)
            .write_all(&bytes)
            .map_err(|e| io("sending a descriptor", e));
    };
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    cmsg.push(SendAncillaryMessage::ScmRights(&fds));
    let sent = loop {
        match sendmsg(
            stream,
            &[IoSlice::new(&bytes)],
            &mut cmsg,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io("sending a descriptor", e)),
        }
    };
    // The fd went with the first bytes; a stream may take the rest in more writes.
    (&*stream)
        .write_all(bytes.get(sent..).unwrap_or_default())
        .map_err(|e| io("sending a descriptor", e))
}

/// Receives one descriptor (and the fd sent with it, close-on-exec) from `stream`.
/// Validates it: bytes that break a SPEC rule are an error, and any fd that came with them is
/// closed.
///
/// # Errors
/// [`Error::Io`] if the socket fails or closes mid-record, or brings more than one fd;
/// [`Error::Descriptor`] if the record breaks a SPEC rule.
pub fn recv(stream: &UnixStream) -> Result<Incoming> {
    let (bytes, fd) = recv_record(stream)?;
    let descriptor = decode(&bytes)?;
    Ok(Incoming { descriptor, fd })
}

/// One 1024-byte record off `stream` and the fd that came with its first byte, if any.
pub(crate) fn recv_record(stream: &UnixStream) -> Result<([u8; RECORD_LEN], Option<OwnedFd>)> {
    let mut bytes = [0u8; RECORD_LEN];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match recvmsg(
            stream,
            &mut [IoSliceMut::new(&mut bytes)],
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(r) => break r,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io("receiving a descriptor", e)),
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    if got.bytes == 0 {
        return Err(io(
            "receiving a descriptor",
            std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        ));
    }
    if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) || fds.len() > 1 {
        // Truncated control data, or more fds than one message carries: drop (close) them.
        return Err(io(
            "receiving a descriptor",
            std::io::Error::other("unexpected ancillary data"),
        ));
    }
    (&*stream)
        .read_exact(bytes.get_mut(got.bytes..).unwrap_or_default())
        .map_err(|e| io("receiving a descriptor", e))?;
    Ok((bytes, fds.pop()))
}
