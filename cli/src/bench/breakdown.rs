//! Where a handoff's time goes: each step of the sender's and the receiver's side timed on
//! its own, in this process (medians of batches), printed after the handoff rows. The steps
//! do not add up to the row exactly (the row also crosses two processes and two cores); they
//! say which cost to cut.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::fs::{FlockOperation, fcntl_get_seals, flock, fstat, fstatfs};
use stridemap::{OpenOptions, ValidDescriptor, socket};
use stridemap_shm::SharedArray;

use super::{Budget, Row, fmt_secs, per_call};

type Result<T> = std::result::Result<T, String>;

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn row(name: String, t: f64, note: &str) -> Row {
    Row {
        group: "handoff step",
        name,
        ours: fmt_secs(t),
        reference: "-".into(),
        ratio: None,
        target: note.into(),
        met: None,
    }
}

/// The steps of handing `a` (a memfd segment, `desc` a view of it) and of handing `named`
/// (a named file's segment, `named_desc` a view of it), each timed alone.
pub(crate) fn rows<T>(
    budget: Budget,
    a: &SharedArray<T>,
    desc: &ValidDescriptor,
    named: &SharedArray<T>,
    named_desc: &ValidDescriptor,
) -> Result<Vec<Row>> {
    let time = |f: &mut dyn FnMut()| per_call(f, budget.rounds, budget.batch);
    let mut rows = Vec::new();
    let fd = a.fd_for_peer().map_err(s)?;
    let dup = || rustix::io::fcntl_dupfd_cloexec(&fd, 0).expect("dup");

    // The sender's side.
    rows.push(row(
        "sender: reopen /proc/self/fd/N for a peer, then close it".into(),
        time(&mut || drop(a.fd_for_peer().expect("reopen"))),
        "(memfd: every send that passes an fd)",
    ));
    let (tx, rx) = UnixStream::pair().map_err(s)?;
    let record = desc.to_bytes();
    let mut buf = [0u8; stridemap::RECORD_LEN];
    rows.push(row(
        "socket: write + read 1 KiB, no fd (one thread)".into(),
        time(&mut || {
            (&tx).write_all(&record).expect("write");
            (&rx).read_exact(&mut buf).expect("read");
        }),
        "(the bare message's own cost, one side)",
    ));
    rows.push(row(
        "socket: sendmsg 1 KiB + SCM_RIGHTS, recvmsg, close the fd".into(),
        time(&mut || {
            socket::send(&tx, desc, Some(fd.as_fd())).expect("send");
            drop(socket::recv(&rx).expect("recv"));
        }),
        "(includes decode + CRC)",
    ));
    rows.push(row(
        "socket: send 1 KiB, recv (decode + CRC), no fd".into(),
        time(&mut || {
            socket::send(&tx, named_desc, None).expect("send");
            drop(socket::recv(&rx).expect("recv"));
        }),
        "(a path record)",
    ));

    // The receiver's side, syscall by syscall.
    rows.push(row(
        "receiver: decode + CRC-32C of a record".into(),
        time(&mut || _ = std::hint::black_box(stridemap::decode_any(&record))),
        "",
    ));
    rows.push(row(
        "receiver: fstat (O6-O8, O12)".into(),
        time(&mut || _ = std::hint::black_box(fstat(&fd))),
        "",
    ));
    rows.push(row(
        "receiver: F_GET_SEALS (O9; O12 reads it again)".into(),
        time(&mut || _ = std::hint::black_box(fcntl_get_seals(&fd))),
        "",
    ));
    rows.push(row(
        "receiver: fstatfs (tmpfs? for MADV_HUGEPAGE)".into(),
        time(&mut || _ = std::hint::black_box(fstatfs(&fd))),
        "(new maps only)",
    ));
    rows.push(row(
        "receiver: flock(LOCK_SH | LOCK_NB)".into(),
        time(&mut || _ = flock(&fd, FlockOperation::NonBlockingLockShared)),
        "(new maps only)",
    ));
    rows.push(row(
        "receiver: dup + close of a received fd".into(),
        time(&mut || drop(std::hint::black_box(dup()))),
        "(subtract from the two rows below)",
    ));
    let opts = OpenOptions::new();
    let whole = a.descriptor();
    let open_fd = |d: &ValidDescriptor| {
        let fd: OwnedFd = dup();
        drop(opts.open((d, fd)).expect("open"));
    };
    rows.push(row(
        "receiver: open an fd record, mapped anew (flock, header, mmap, munmap)".into(),
        time(&mut || open_fd(whole)),
        "",
    ));
    let keep = opts.open((whole, dup())).map_err(s)?;
    rows.push(row(
        "receiver: open an fd record, region reused (O5-O9, O12, lookup)".into(),
        time(&mut || open_fd(desc)),
        "",
    ));
    drop(keep);
    let mut session = stridemap::socket::Session::new(opts.clone());
    let held = session
        .open(socket::Incoming {
            descriptor: whole.clone(),
            fd: Some(dup()),
        })
        .map_err(s)?;
    rows.push(row(
        "receiver: session, a record without fd served from a held mapping".into(),
        time(&mut || {
            let got = session.open(socket::Incoming {
                descriptor: desc.clone(),
                fd: None,
            });
            drop(got.expect("served"));
        }),
        "(no syscall)",
    ));
    drop((held, session));
    let keep = opts.open(named.descriptor()).map_err(s)?;
    rows.push(row(
        "receiver: open a path record, region reused (O1, O2, fstat)".into(),
        time(&mut || drop(opts.open(named_desc).expect("open"))),
        "",
    ));
    drop(keep);
    rows.push(row(
        "receiver: open a path record, mapped anew (openat2, flock, header, mmap)".into(),
        time(&mut || drop(opts.open(named.descriptor()).expect("open"))),
        "",
    ));
    Ok(rows)
}
