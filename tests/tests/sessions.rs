//! Sessions (SPEC.md §6 "Reusing a mapping", case 4, and §6.2): a receiver that keeps what
//! its connection was handed serves later descriptors of the same segment and generation
//! without an fd, and only those; the producer's release records make it let go, so that the
//! pool can recycle or delete the segment.

use std::io::Write;
use std::os::unix::net::UnixStream;

use stridemap::socket::{self, Event, Session};
use stridemap::{Error, OpenOptions, Release};
use stridemap_core::{Order, Slice};
use stridemap_shm::{Pool, PoolConfig, SegmentKind, Sender, SharedArray};

struct Here {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

fn here() -> Here {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let root = dir.path().canonicalize().unwrap();
    Here { _dir: dir, root }
}

impl Here {
    fn pool(&self, kind: SegmentKind, recycle: bool) -> Pool {
        Pool::with_config(
            PoolConfig::default()
                .temp_folder(&self.root)
                .kind(kind)
                .recycle_max_bytes(if recycle { 1 << 30 } else { 0 })
                .sweep_on_start(false),
        )
        .unwrap()
    }

    fn session(&self) -> Session {
        Session::new(OpenOptions::new().allow_root(&self.root))
    }
}

/// An array of `n` f64s, values `first`, `first + 1`, … (published: recyclable).
fn array(pool: &Pool, n: usize, first: f64) -> SharedArray<f64> {
    let mut a = pool.alloc::<f64>(&[n], Order::C).unwrap();
    let data: Vec<f64> = (0..n).map(|i| first + i as f64).collect();
    a.copy_from_slice(&data).unwrap();
    a.publish().unwrap()
}

fn rows(a: &SharedArray<f64>, from: i64, to: i64) -> stridemap::ValidDescriptor {
    let l = a
        .descriptor()
        .layout()
        .slice_axis(0, Slice::range(from, to))
        .unwrap();
    a.descriptor().to_builder().layout(&l).build().unwrap()
}

/// Element `i` of the f64 view that `session` receives next on `rx`.
fn recv_element(session: &mut Session, rx: &UnixStream, i: usize) -> f64 {
    session
        .recv(rx)
        .unwrap()
        .volatile_view::<f64>()
        .unwrap()
        .get(&[i])
        .unwrap()
}

/// The second descriptor of a segment travels without an fd and is served from the held
/// mapping: no new map (same memory), right elements.
#[test]
fn a_held_segment_is_served_without_an_fd() {
    let h = here();
    let pool = h.pool(SegmentKind::Memfd, false);
    let a = array(&pool, 1024, 0.0);
    let (tx, rx) = UnixStream::pair().unwrap();
    let (mut sender, mut session) = (Sender::new(), h.session());
    sender.send(&tx, &a).unwrap();
    let first = session.recv(&rx).unwrap();
    assert_eq!(session.len(), 1);
    // What goes on the wire the second time: the record alone.
    sender.send_view(&tx, &a, &rows(&a, 10, 20)).unwrap();
    let raw = socket::recv(&rx).unwrap();
    assert!(raw.fd.is_none(), "the fd went again");
    // A plain reader refuses it; the session serves it from what it holds.
    assert!(matches!(
        OpenOptions::new()
            .allow_root(&h.root)
            .open((&raw.descriptor, None)),
        Err(Error::MissingFd)
    ));
    let m = session.open(raw).unwrap();
    assert_eq!(
        m.volatile_view::<f64>().unwrap().to_vec(),
        (10..20).map(f64::from).collect::<Vec<_>>()
    );
    // The same enclosing buffer, the same memory: not mapped again.
    assert_eq!(m.as_ptr(), first.as_ptr());
    drop((first, m));
    // Held by the session alone now, still served.
    sender.send(&tx, &a).unwrap();
    assert_eq!(recv_element(&mut session, &rx, 3), 3.0);
}

/// A descriptor without its fd of a segment this connection was never handed is refused,
/// and so is one handed on another connection (never found by device and inode).
#[test]
fn a_segment_never_handed_on_this_connection_is_refused() {
    let h = here();
    let pool = h.pool(SegmentKind::Memfd, false);
    let (a, b) = (array(&pool, 512, 0.0), array(&pool, 512, 1.0));
    let (tx1, rx1) = UnixStream::pair().unwrap();
    let (tx2, rx2) = UnixStream::pair().unwrap();
    let (mut one, mut other) = (h.session(), h.session());
    Sender::new().send(&tx1, &a).unwrap();
    let _held = one.recv(&rx1).unwrap();
    // b never handed to `one`.
    socket::send(&tx1, b.descriptor(), None).unwrap();
    let e = one.recv(&rx1).unwrap_err();
    assert!(
        matches!(e, Error::NotInSession { generation, .. } if generation == b.descriptor().generation()),
        "{e}"
    );
    assert_eq!(e.rule(), Some("S1"));
    // a handed to `one` only (and mapped in this very process): `other` refuses it.
    socket::send(&tx2, a.descriptor(), None).unwrap();
    assert!(matches!(other.recv(&rx2), Err(Error::NotInSession { .. })));
    assert!(other.is_empty());
}

/// A recycled segment (the next generation, O10) is never served from the mapping of the
/// generation before: its descriptor without an fd is refused, and with its fd it is opened
/// anew and shows the new contents.
#[test]
fn a_recycled_segment_is_never_served_from_the_held_generation() {
    let h = here();
    let pool = h.pool(SegmentKind::Memfd, true);
    let a = array(&pool, 2048, 0.0);
    let (id, generation) = (
        a.descriptor().segment_id().unwrap(),
        a.descriptor().generation(),
    );
    let (tx, rx) = UnixStream::pair().unwrap();
    let (mut sender, mut session) = (Sender::new(), h.session());
    sender.send(&tx, &a).unwrap();
    drop(session.recv(&rx).unwrap());
    // The producer is done; the session lets go; the pool recycles the segment.
    drop(a);
    assert_eq!(sender.flush(&tx).unwrap(), 1);
    assert!(matches!(session.next(&rx).unwrap(), Event::Released(r) if r.generation == generation));
    pool.collect();
    let b = array(&pool, 2048, 100.0);
    let bd = b.descriptor();
    assert_eq!(
        (bd.segment_id(), bd.generation()),
        (Some(id), generation + 1),
        "not recycled"
    );
    // Forged: b's descriptor without its fd.
    socket::send(&tx, bd, None).unwrap();
    assert!(matches!(session.recv(&rx), Err(Error::NotInSession { .. })));
    // The sender passes its fd: opened anew, new contents.
    sender.send(&tx, &b).unwrap();
    assert_eq!(recv_element(&mut session, &rx, 0), 100.0);
}

/// A recycled segment whose old generation the session still holds: the pool cannot recycle
/// it (the session's lock), and a descriptor of the held generation that differs from it is
/// refused.
#[test]
fn a_descriptor_unlike_the_held_mapping_is_refused() {
    let h = here();
    let pool = h.pool(SegmentKind::Memfd, false);
    let a = array(&pool, 2048, 0.0);
    let (tx, rx) = UnixStream::pair().unwrap();
    let (mut sender, mut session) = (Sender::new(), h.session());
    // The first descriptor's buffer is the first page of the data only.
    let page = stridemap::Layout::contiguous(8, &[512], Order::C).unwrap();
    let d = a.descriptor();
    let first = d
        .to_builder()
        .layout(&page)
        .buffer(d.buffer_offset(), 4096)
        .build()
        .unwrap();
    sender.send_view(&tx, &a, &first).unwrap();
    let _m = session.recv(&rx).unwrap();
    // The whole array reaches past the held region.
    socket::send(&tx, a.descriptor(), None).unwrap();
    assert!(matches!(
        session.recv(&rx),
        Err(Error::NotAsHeld { field: "buffer" })
    ));
    // Another file length.
    let other_len = a
        .descriptor()
        .to_builder()
        .file_len(a.descriptor().file_len() + 4096)
        .build()
        .unwrap();
    socket::send(&tx, &other_len, None).unwrap();
    let e = session.recv(&rx).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotAsHeld {
                field: "file length"
            }
        ),
        "{e}"
    );
    assert_eq!(e.rule(), Some("S2"));
}

/// A named file the session holds, truncated behind its back, is refused (O7 again); its
/// descriptor is not served from the old mapping.
#[test]
fn a_truncated_named_file_is_refused() {
    let h = here();
    let pool = h.pool(SegmentKind::File, false);
    let a = array(&pool, 4096, 0.0);
    let path = std::path::PathBuf::from(a.descriptor().path().unwrap());
    let (tx, rx) = UnixStream::pair().unwrap();
    let (mut sender, mut session) = (Sender::new(), h.session());
    sender.send(&tx, &a).unwrap();
    drop(session.recv(&rx).unwrap());
    assert_eq!(session.len(), 1);
    sender.send(&tx, &a).unwrap();
    drop(session.recv(&rx).unwrap()); // served, unchanged
    // Shrink it (the producer's own user may: chmod back, truncate).
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(8192)
        .unwrap();
    sender.send(&tx, &a).unwrap();
    let e = session.recv(&rx).unwrap_err();
    assert!(
        matches!(e, Error::LengthMismatch { actual: 8192, .. }),
        "{e}"
    );
}

/// A named file replaced by another at the same path: the descriptor of the new file is not
/// served from the old one's mapping (its identity differs): opened anew, checked (O10
/// refuses it, its header is not the segment's).
#[test]
fn a_replaced_named_file_is_not_served() {
    let h = here();
    let pool = h.pool(SegmentKind::File, false);
    let a = array(&pool, 4096, 0.0);
    let path = std::path::PathBuf::from(a.descriptor().path().unwrap());
    let (tx, rx) = UnixStream::pair().unwrap();
    let (mut sender, mut session) = (Sender::new(), h.session());
    sender.send(&tx, &a).unwrap();
    let _m = session.recv(&rx).unwrap();
    // Another file, same length, at the same path.
    let len = a.descriptor().file_len();
    let tmp = path.with_extension("new");
    std::fs::File::create(&tmp).unwrap().set_len(len).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let st = std::fs::metadata(&path).unwrap();
    let forged = a
        .descriptor()
        .to_builder()
        .identity(
            std::os::unix::fs::MetadataExt::dev(&st),
            std::os::unix::fs::MetadataExt::ino(&st),
        )
        .build()
        .unwrap();
    socket::send(&tx, &forged, None).unwrap();
    let e = session.recv(&rx).unwrap_err();
    assert!(matches!(e, Error::StaleSegment { .. }), "{e}");
    // The old descriptor: served from the mapping of the file it names (still that inode).
    sender.send(&tx, &a).unwrap();
    assert_eq!(recv_element(&mut session, &rx, 7), 7.0);
}

/// The release record makes the session let go, and then the producer can delete (named
/// file) the segment: before it, the session's lock stops it.
#[test]
fn release_lets_the_producer_take_the_segment_back() {
    let h = here();
    let pool = h.pool(SegmentKind::File, false);
    let a = array(&pool, 4096, 0.0);
    let path = std::path::PathBuf::from(a.descriptor().path().unwrap());
    let (tx, rx) = UnixStream::pair().unwrap();
    let (mut sender, mut session) = (Sender::new(), h.session());
    sender.send(&tx, &a).unwrap();
    drop(session.recv(&rx).unwrap()); // the view is gone; the session holds the mapping
    drop(a);
    pool.collect();
    assert!(path.exists(), "deleted under a mapping the session holds");
    assert_eq!(pool.stats().pending, 1);
    assert_eq!(sender.pending(), 1);
    assert_eq!(sender.flush(&tx).unwrap(), 1);
    assert!(matches!(session.next(&rx).unwrap(), Event::Released(_)));
    assert!(session.is_empty());
    pool.collect();
    assert_eq!(pool.stats().pending, 0);
    assert!(!path.exists(), "not deleted once released");
}

/// Release records written before the next descriptor are applied on the way to it, and a
/// segment released is handed with its fd again.
#[test]
fn releases_go_before_the_next_descriptor() {
    let h = here();
    let pool = h.pool(SegmentKind::Memfd, false);
    let (a, b) = (array(&pool, 512, 0.0), array(&pool, 512, 1.0));
    let (tx, rx) = UnixStream::pair().unwrap();
    let (mut sender, mut session) = (Sender::new(), h.session());
    sender.send(&tx, &a).unwrap();
    drop(session.recv(&rx).unwrap());
    assert!(sender.release(&a));
    sender.send(&tx, &b).unwrap();
    drop(session.recv(&rx).unwrap());
    assert_eq!(session.len(), 1, "a was not released");
    sender.send(&tx, &a).unwrap();
    let raw = socket::recv(&rx).unwrap();
    assert!(
        raw.fd.is_some(),
        "a released segment must go with its fd again"
    );
}

/// Dropping the session lets go of everything it held: the pool deletes the segment.
#[test]
fn the_session_holds_nothing_once_dropped() {
    let h = here();
    let pool = h.pool(SegmentKind::File, false);
    let a = array(&pool, 4096, 0.0);
    let path = std::path::PathBuf::from(a.descriptor().path().unwrap());
    let (tx, rx) = UnixStream::pair().unwrap();
    let mut session = h.session();
    Sender::new().send(&tx, &a).unwrap();
    drop(session.recv(&rx).unwrap());
    drop(a);
    pool.collect();
    assert!(path.exists());
    drop(session);
    pool.collect();
    assert!(!path.exists(), "the dropped session still held the segment");
}

/// Forged and garbage records are clean errors, no panic, and change nothing held.
#[test]
fn forged_releases_and_garbage_are_clean_errors() {
    let h = here();
    let pool = h.pool(SegmentKind::Memfd, false);
    let a = array(&pool, 512, 0.0);
    let (id, generation) = (
        a.descriptor().segment_id().unwrap(),
        a.descriptor().generation(),
    );
    let (tx, rx) = UnixStream::pair().unwrap();
    let (mut sender, mut session) = (Sender::new(), h.session());
    sender.send(&tx, &a).unwrap();
    drop(session.recv(&rx).unwrap());
    // A release of the held segment with a broken checksum.
    let mut forged = Release {
        segment_id: id,
        generation,
    }
    .to_bytes();
    forged[1023] ^= 0xff;
    (&tx).write_all(&forged).unwrap();
    let e = session.next(&rx).unwrap_err();
    assert!(
        matches!(e, Error::BadRelease(stridemap::ReleaseError::Checksum)),
        "{e}"
    );
    // With its reserved bytes set (checksum fixed up by hand would need the CRC: any bytes).
    (&tx).write_all(&[0x5a; 1024]).unwrap();
    assert!(matches!(session.next(&rx), Err(Error::Descriptor(_))));
    // A valid release that comes with an fd: refused, the fd closed.
    let release = Release {
        segment_id: id,
        generation,
    }
    .to_bytes();
    let fd = a.fd_for_peer().unwrap();
    send_with_fd(&tx, &release, &fd);
    assert!(matches!(session.next(&rx), Err(Error::UnexpectedFd)));
    assert_eq!(session.len(), 1, "a refused record changed what is held");
    // A release of something never held: nothing to do, no error.
    let other = Release {
        segment_id: [7; 16],
        generation: 1,
    }
    .to_bytes();
    (&tx).write_all(&other).unwrap();
    assert!(matches!(session.next(&rx).unwrap(), Event::Released(_)));
    assert_eq!(session.len(), 1);
}

/// `bytes` with `fd` as SCM_RIGHTS on the same sendmsg.
fn send_with_fd(tx: &UnixStream, bytes: &[u8], fd: &std::os::fd::OwnedFd) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let fds = [std::os::fd::AsFd::as_fd(fd)];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    assert!(cmsg.push(SendAncillaryMessage::ScmRights(&fds)));
    let n = sendmsg(
        tx,
        &[std::io::IoSlice::new(bytes)],
        &mut cmsg,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(n, bytes.len());
}
