//! Passing descriptors over a Unix stream socket: fixed records back to back, the segment's
//! fd as SCM_RIGHTS on the same `sendmsg` (SPEC.md §6.1), received close-on-exec.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use stridemap::{Mapping, OpenOptions};
use stridemap_core::{RECORD_LEN, Source, ValidDescriptor, decode};

use crate::{Error, Result};

fn io(context: &str, e: impl Into<std::io::Error>) -> Error {
    Error::Io {
        context: context.into(),
        source: e.into(),
    }
}

/// Sends `desc` (its fixed record) and, if given, `fd` over `stream`.
///
/// ```
/// use std::os::unix::net::UnixStream;
/// use stridemap_core::{Builder, DType};
///
/// let (tx, rx) = UnixStream::pair()?;
/// let desc = Builder::new(DType::parse("<f8")?, &[4]).path("/dev/shm/stridemap-x/a").build()?;
/// stridemap_shm::send(&tx, &desc, None)?;
/// let (got, fd) = stridemap_shm::recv(&rx)?;
/// assert_eq!((got, fd.is_none()), (desc, true));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn send(stream: &UnixStream, desc: &ValidDescriptor, fd: Option<BorrowedFd<'_>>) -> Result<()> {
    let bytes = desc.to_bytes();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds: [BorrowedFd<'_>; 1];
    if let Some(fd) = fd {
        fds = [fd];
        cmsg.push(SendAncillaryMessage::ScmRights(&fds));
    }
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
pub fn recv(stream: &UnixStream) -> Result<(ValidDescriptor, Option<OwnedFd>)> {
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
    let desc = decode(&bytes)?;
    Ok((desc, fds.pop()))
}

/// Receives a descriptor and opens it under `opts`: by its fd if it came with one (closed once
/// mapped), else by its path.
///
/// ```
/// fn total(stream: &std::os::unix::net::UnixStream) -> Result<f64, stridemap_shm::Error> {
///     let m = stridemap_shm::receive(stream, &stridemap::OpenOptions::new())?;
///     Ok(m.view::<f64>()?.iter().sum())
/// }
/// ```
pub fn receive(stream: &UnixStream, opts: &OpenOptions) -> Result<Mapping> {
    let (desc, fd) = recv(stream)?;
    Ok(match (desc.source(), fd) {
        (Source::Fd, Some(fd)) => stridemap::open_fd(&desc, fd, opts)?,
        (Source::Path, None) => stridemap::open(&desc, opts)?,
        _ => return Err(stridemap::Error::MissingFd.into()),
    })
}
