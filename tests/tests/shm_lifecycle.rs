//! Segment lifecycle across processes (the test binary re-executes itself as consumers):
//! one producer and four consumers for named and memfd segments; the same `Arc` shared twice
//! is written once; a consumer keeps reading after the producer unlinked; the last user out
//! deletes; frozen segments cannot be written; recycled segments refuse stale descriptors.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stridemap::{Error as StdError, OpenOptions};
use stridemap_core::{Mode, Order, Slice};
use stridemap_shm::{Pool, PoolConfig, SegmentKind, SharedArray};
use stridemap_tests::child;

const ENTRY: &str = "child_process_entry";

/// Not a test of its own: the entry point children run (see `stridemap_tests::child`).
#[test]
fn child_process_entry() {
    let Some(role) = child::role() else { return };
    let root = child::arg("ROOT");
    let opts = OpenOptions::new().allow_root(&root);
    let stream = UnixStream::connect(child::arg("SOCK")).unwrap();
    match role.as_str() {
        // Receive one array, reply with the sum of its reversed second column, exit.
        "sum" => {
            let m = stridemap::socket::recv(&stream)
                .and_then(|i| opts.open(i))
                .unwrap();
            let s = column_sum(&m);
            reply(&stream, &format!("{s}"));
        }
        // Receive, map, say "ready", wait for "go", read again, say the sum, wait for "bye".
        "hold" => {
            let m = stridemap::socket::recv(&stream)
                .and_then(|i| opts.open(i))
                .unwrap();
            reply(&stream, "ready");
            expect(&stream, "go");
            let s = column_sum(&m);
            reply(&stream, &format!("{s}"));
            expect(&stream, "bye");
            drop(m);
            reply(&stream, "unmapped");
        }
        // Try every way to write or delete a frozen segment; report what happened.
        "vandal" => {
            let stridemap::socket::Incoming {
                descriptor: desc,
                fd,
            } = stridemap::socket::recv(&stream).unwrap();
            let mut report = Vec::new();
            // Through the API: r+ of a read-only descriptor.
            let r = match fd.as_ref() {
                Some(fd) => opts
                    .clone()
                    .mode(Mode::ReadWrite)
                    .open((&desc, fd.try_clone().unwrap())),
                None => opts.clone().mode(Mode::ReadWrite).open(&desc),
            };
            report.push(format!(
                "api_rw={}",
                matches!(r, Err(StdError::ModeNotAllowed { .. }))
            ));
            if let Some(fd) = fd {
                // The kernel: a write(2), and a new writable shared map (F_SEAL_FUTURE_WRITE).
                let w = rustix::io::pwrite(&fd, &[1, 2, 3], 4096);
                report.push(format!("write_refused={}", w.is_err()));
                let rw = rustix::fs::open(
                    format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
                    rustix::fs::OFlags::RDWR,
                    rustix::fs::Mode::empty(),
                );
                let map_refused = match rw {
                    Err(_) => true,
                    Ok(f) => {
                        stridemap_tests::try_map_shared_writable(&std::fs::File::from(f)).is_err()
                    }
                };
                report.push(format!("writable_map_refused={map_refused}"));
            }
            reply(&stream, &report.join(" "));
        }
        other => panic!("unknown role {other}"),
    }
}

fn column_sum(m: &stridemap::Mapping) -> f64 {
    // Named-file segments are not frozen (their owner could make them writable again), so
    // the copying view, which works for both kinds.
    let v = m.volatile_view::<f64>().unwrap();
    let col = v
        .index_axis(1, 1)
        .unwrap()
        .slice_axis(0, Slice::REVERSED)
        .unwrap();
    col.iter().sum()
}

fn reply(s: &UnixStream, line: &str) {
    (&*s).write_all(format!("{line}\n").as_bytes()).unwrap();
}

fn expect(s: &UnixStream, want: &str) {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), want);
}

fn read_line(s: &UnixStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while (&*s).read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        buf.push(byte[0]);
    }
    String::from_utf8(buf).unwrap()
}

struct Harness {
    _dir: tempfile::TempDir,
    root: PathBuf,
    listener: UnixListener,
    sock: PathBuf,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let root = dir.path().canonicalize().unwrap();
        let sock = root.join("ctl.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        Harness {
            _dir: dir,
            root,
            listener,
            sock,
        }
    }

    fn pool(&self, kind: SegmentKind) -> Pool {
        Pool::with_config(PoolConfig::default().temp_folder(&self.root).kind(kind)).unwrap()
    }

    /// Starts a child in `role` and returns it with its connection.
    fn child(&self, role: &str) -> (std::process::Child, UnixStream) {
        let c = child::spawn(
            ENTRY,
            role,
            &[
                ("ROOT", self.root.display().to_string()),
                ("SOCK", self.sock.display().to_string()),
            ],
        );
        let (s, _) = self.listener.accept().unwrap();
        (c, s)
    }

    fn segment_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.root).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                    out.push(f.path());
                }
            }
        }
        out
    }
}

/// A 1000×3 f64 array whose element (i, j) is i * 3 + j, frozen.
fn matrix(pool: &Pool) -> SharedArray<f64> {
    let mut a = pool.alloc::<f64>(&[1000, 3], Order::C).unwrap();
    let n = a.layout().len() as usize;
    let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
    a.copy_from_slice(&values).unwrap();
    a.freeze().unwrap()
}

/// Σ over i of (i * 3 + 1).
const COLUMN_SUM: f64 = 1_499_500.0;

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn one_producer_four_consumers() {
    for kind in [SegmentKind::File, SegmentKind::Memfd] {
        let h = Harness::new();
        let pool = h.pool(kind);
        let a = matrix(&pool);
        let kids: Vec<_> = (0..4).map(|_| h.child("sum")).collect();
        for (_, s) in &kids {
            a.send(s).unwrap();
        }
        for (mut c, s) in kids {
            assert_eq!(
                read_line(&s).parse::<f64>().unwrap(),
                COLUMN_SUM,
                "{kind:?}"
            );
            assert!(c.wait().unwrap().success());
        }
    }
}

#[test]
fn the_same_arc_is_written_once() {
    let h = Harness::new();
    let pool = h.pool(SegmentKind::File);
    let data: Arc<Vec<f64>> = Arc::new((0..300_000).map(f64::from).collect());
    let first = pool.share_arc(&data).unwrap();
    let second = pool.share_arc(&data).unwrap();
    assert_eq!(first.descriptor(), second.descriptor());
    assert_eq!(h.segment_files().len(), 1);
    // Equal content in another Arc is another segment: the key is identity, not content.
    let twin: Arc<Vec<f64>> = Arc::new((*data).clone());
    let third = pool.share_arc(&twin).unwrap();
    assert_ne!(
        third.descriptor().segment_id(),
        first.descriptor().segment_id()
    );
    // Once the Arc is gone, its address may be reused; the pool shares anew.
    drop((first, second));
    drop(data);
    let fresh: Arc<Vec<f64>> = Arc::new(vec![1.0; 10]);
    let fourth = pool.share_arc(&fresh).unwrap();
    // A named file is not frozen: its elements are read by copy.
    assert!(fourth.view_as::<f64>().is_err());
    let fourth = fourth.typed::<f64>().unwrap();
    assert_eq!(fourth.volatile_view().unwrap().to_vec(), vec![1.0; 10]);
}

#[test]
fn readers_keep_reading_and_the_last_one_out_deletes() {
    let h = Harness::new();
    let pool = Pool::with_config(
        PoolConfig::default()
            .temp_folder(&h.root)
            .recycle_max_bytes(0),
    )
    .unwrap();
    let a = matrix(&pool);
    let (mut c, s) = h.child("hold");
    a.send(&s).unwrap();
    assert_eq!(read_line(&s), "ready");
    let files = h.segment_files();
    assert_eq!(files.len(), 1);
    // The producer is done: the reader's lock keeps the segment (no unlink, nothing recycled).
    drop(a);
    std::thread::sleep(Duration::from_millis(100));
    assert!(files[0].exists(), "deleted under a reader");
    assert_eq!((pool.stats().free, pool.stats().pending), (0, 1));
    reply(&s, "go");
    assert_eq!(read_line(&s).parse::<f64>().unwrap(), COLUMN_SUM);
    // The reader unmaps: the pool, told by the kernel lock, deletes the file.
    reply(&s, "bye");
    assert_eq!(read_line(&s), "unmapped");
    wait_until("the last user out deletes the file", || !files[0].exists());
    assert!(c.wait().unwrap().success());
    assert_eq!((pool.stats().free, pool.stats().pending), (0, 0));

    // And when the producer unlinks first (its pool is dropped), a reader keeps reading.
    let a = matrix(&pool);
    let (mut c, s) = h.child("hold");
    a.send(&s).unwrap();
    assert_eq!(read_line(&s), "ready");
    let folders = pool.folders();
    drop(a);
    drop(pool);
    assert!(
        folders.iter().all(|f| !f.exists()),
        "pool folder left behind"
    );
    reply(&s, "go");
    assert_eq!(read_line(&s).parse::<f64>().unwrap(), COLUMN_SUM);
    reply(&s, "bye");
    assert_eq!(read_line(&s), "unmapped");
    assert!(c.wait().unwrap().success());
}

#[test]
fn frozen_segments_cannot_be_written_by_consumers() {
    for kind in [SegmentKind::File, SegmentKind::Memfd] {
        let h = Harness::new();
        let pool = h.pool(kind);
        let a = matrix(&pool);
        let (mut c, s) = h.child("vandal");
        a.send(&s).unwrap();
        let report = read_line(&s);
        assert!(report.contains("api_rw=true"), "{kind:?}: {report}");
        if kind == SegmentKind::Memfd {
            assert!(report.contains("write_refused=true"), "{report}");
            assert!(report.contains("writable_map_refused=true"), "{report}");
        }
        assert!(c.wait().unwrap().success());
        assert_eq!(a.volatile_view().unwrap().get(&[0, 0]).unwrap(), 0.0);
        // Only the memfd is frozen: the producer's references are sound there alone.
        assert_eq!(a.view().is_ok(), kind == SegmentKind::Memfd, "{kind:?}");
    }
    // Consumers have no way to delete: only the producer's pool unlinks (SPEC.md §7), and a
    // folder's files are only removed by its owner or, once the owner is dead, by the sweep.
}

#[test]
fn recycled_segments_refuse_stale_descriptors() {
    let h = Harness::new();
    let pool = h.pool(SegmentKind::File);
    let opts = OpenOptions::new().allow_root(&h.root);
    let a = matrix(&pool);
    let old = a.descriptor().clone();
    assert_eq!(old.generation(), 1);
    drop(a);
    wait_until("the segment is on the free list", || pool.stats().free == 1);
    let err = opts.open(&old).unwrap_err();
    assert!(
        matches!(
            err,
            StdError::StaleSegment {
                found: Some((_, 2)),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.rule(), Some("O10"));
    // The next array of the same size class reuses the segment (same file, new generation).
    let b = matrix(&pool);
    assert_eq!(b.descriptor().segment_id(), old.segment_id());
    assert_eq!(b.descriptor().generation(), 2);
    assert_eq!(h.segment_files().len(), 1);
    let m = opts.open(b.descriptor()).unwrap();
    assert_eq!(column_sum(&m), COLUMN_SUM);
    assert!(matches!(
        opts.open(&old),
        Err(StdError::StaleSegment { .. })
    ));
}

#[test]
fn writable_arrays_are_filled_by_consumers_in_place() {
    for kind in [SegmentKind::File, SegmentKind::Memfd] {
        let h = Harness::new();
        let pool = h.pool(kind);
        // Only arrays allocated for consumers (OutputArray) can be shared r+: the producer's
        // SharedArrayMut has no way to send itself before it is frozen.
        let mut out = pool.alloc_output::<f64>(&[4], Order::C).unwrap();
        let (tx, rx) = UnixStream::pair().unwrap();
        out.send(&tx).unwrap();
        let opts = OpenOptions::new().allow_root(&h.root).mode(Mode::ReadWrite);
        let mut m = opts.open(stridemap::socket::recv(&rx).unwrap()).unwrap();
        // An r+ output is never frozen: it lends no references, only copies.
        assert!(!m.is_frozen());
        assert!(matches!(
            m.view_mut::<f64>(),
            Err(stridemap::ViewError::NotFrozen)
        ));
        // Two writers at once (the consumer's map and the producer's), disjoint halves.
        let (mut left, _) = m
            .volatile_view_mut::<f64>()
            .unwrap()
            .split_axis(0, 2)
            .unwrap();
        left.fill(2.5);
        out.volatile_view_mut()
            .unwrap()
            .slice_axis(0, Slice::range(2, 4))
            .unwrap()
            .copy_from_slice(&[7.0, 8.0])
            .unwrap();
        drop(m);
        assert_eq!(out.to_vec().unwrap(), [2.5, 2.5, 7.0, 8.0], "{kind:?}");
    }
}

#[test]
fn frozen_memfds_are_never_recycled_and_published_ones_are() {
    let h = Harness::new();
    let pool = h.pool(SegmentKind::Memfd);
    // Frozen (sealed F_SEAL_WRITE): never written again, so dropped, not kept for reuse.
    let a = matrix(&pool);
    assert!(a.is_frozen());
    drop(a);
    pool.collect();
    assert_eq!((pool.stats().free, pool.stats().pending), (0, 0));
    assert_eq!(pool.stats().held_bytes, 0);
    // Published (F_SEAL_FUTURE_WRITE only): recycled, and the next alloc fills it again …
    let publish = |v: f64| {
        let mut a = pool.alloc::<f64>(&[1000, 3], Order::C).unwrap();
        a.fill(v).unwrap();
        a.publish().unwrap()
    };
    let a = publish(1.0);
    assert!(!a.is_frozen());
    let id = a.descriptor().segment_id();
    drop(a);
    wait_until("the segment is on the free list", || pool.stats().free == 1);
    let b = publish(2.0);
    assert_eq!(
        (b.descriptor().segment_id(), b.descriptor().generation()),
        (id, 2)
    );
    let (tx, rx) = UnixStream::pair().unwrap();
    b.send(&tx).unwrap();
    let m = stridemap::socket::recv(&rx)
        .and_then(|i| OpenOptions::new().open(i))
        .unwrap();
    // … which consumers read through copies only: the producer writes it again later.
    assert!(!m.is_frozen());
    assert!(m.view::<f64>().is_err());
    assert_eq!(m.volatile_view::<f64>().unwrap().get(&[0, 0]).unwrap(), 2.0);
    // But not an output array consumers write: that one is a fresh, unsealed segment.
    drop((m, b));
    wait_until("the segment is on the free list", || pool.stats().free == 1);
    let out = pool.alloc_output::<f64>(&[1000, 3], Order::C).unwrap();
    assert_ne!(out.descriptor().unwrap().segment_id(), id);
}

/// Issue 20, item 2: a consumer clones its fd before opening, drops the segment lock through
/// the clone (same open file description), and the producer drops the array. Before, the
/// pool then recycled the sealed memfd and wrote the next array through its pre-seal map,
/// changing a live `&[f64]` from 1.0 to 666.0. A frozen memfd is never recycled now.
#[test]
fn a_reader_that_drops_its_lock_keeps_unchanged_bytes() {
    let h = Harness::new();
    let pool = h.pool(SegmentKind::Memfd);
    let mut a = pool.alloc::<f64>(&[1000], Order::C).unwrap();
    a.fill(1.0).unwrap();
    let a = a.freeze().unwrap();
    let (tx, rx) = UnixStream::pair().unwrap();
    a.send(&tx).unwrap();
    let incoming = stridemap::socket::recv(&rx).unwrap();
    let fd = incoming.fd.unwrap();
    let dup = fd.try_clone().unwrap();
    let m = OpenOptions::new().open((&incoming.descriptor, fd)).unwrap();
    let v = m.view::<f64>().unwrap();
    let live: &[f64] = v.as_slice().unwrap();
    assert_eq!(live[0], 1.0);
    // Safe code drops the reader's lock.
    rustix::fs::flock(&dup, rustix::fs::FlockOperation::Unlock).unwrap();
    drop(a);
    pool.collect();
    // The next array of that size: a fresh segment, never the frozen one.
    let mut b = pool.alloc::<f64>(&[1000], Order::C).unwrap();
    b.fill(666.0).unwrap();
    let b = b.freeze().unwrap();
    assert_ne!(
        b.descriptor().segment_id(),
        incoming.descriptor.segment_id()
    );
    assert!(live.iter().all(|&x| x == 1.0), "a live &[f64] changed");
    drop(dup);
}

/// Issue 20, item 3: mode 0400 does not stop root (`dd conv=notrunc` changed a value under a
/// live `&[f64]` of a named-file segment). A named file is never frozen: the producer gets
/// no reference, only copies, which see the write.
#[test]
fn named_file_segments_lend_the_producer_no_reference() {
    let h = Harness::new();
    let pool = h.pool(SegmentKind::File);
    let mut a = pool.alloc::<f64>(&[1000], Order::C).unwrap();
    a.volatile_view_mut().unwrap().fill(1.0);
    let a = a.freeze().unwrap();
    assert!(!a.is_frozen());
    assert!(matches!(
        a.view(),
        Err(stridemap_shm::Error::Stridemap(StdError::View(
            stridemap::ViewError::NotFrozen
        )))
    ));
    assert!(a.byte_view().is_err() && a.view_as::<f64>().is_err());
    let v = a.volatile_view().unwrap();
    assert_eq!(v.get(&[0]).unwrap(), 1.0);
    let path = h.segment_files().pop().unwrap();
    // Root opens a 0400 file for writing; anyone else is refused (and nothing is tested).
    let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) else {
        eprintln!("note: not root: the 0400 segment cannot be opened for writing here");
        return;
    };
    let at = a.descriptor().buffer_offset();
    std::os::unix::fs::FileExt::write_all_at(&f, &666f64.to_le_bytes(), at).unwrap();
    assert_eq!(
        v.get(&[0]).unwrap(),
        666.0,
        "copies see the write; no reference was lent"
    );
}

#[test]
fn array_messages_go_inline_or_shared_and_open_on_the_other_side() {
    use stridemap::message::{ArrayMessage, Received};
    use stridemap_shm::ByteView;
    let data: Vec<f64> = (0..4096).map(f64::from).collect();
    let layout = stridemap::Layout::contiguous(8, &[64, 64], Order::C).unwrap();
    let big = ByteView::new(
        bytemuck::cast_slice(&data),
        layout,
        stridemap::DType::parse("<f8").unwrap(),
    )
    .unwrap();
    let small = big.slice_axis(0, Slice::range(0, 1)).unwrap();
    for kind in [SegmentKind::File, SegmentKind::Memfd] {
        let h = Harness::new();
        let pool = Pool::with_config(
            PoolConfig::default()
                .temp_folder(&h.root)
                .kind(kind)
                .max_nbytes(1024),
        )
        .unwrap();
        let opts = OpenOptions::new().allow_root(&h.root);
        // Small: the bytes themselves, a copy the receiver owns.
        let out = pool.message(&small).unwrap();
        assert!(out.keep.is_none());
        let wire = postcard::to_allocvec(&out.message).unwrap();
        let back: ArrayMessage = postcard::from_bytes(&wire).unwrap();
        let got = opts.open(&back).unwrap();
        assert!(matches!(got, Received::Owned(_)));
        assert_eq!(got.view::<f64>().unwrap().to_vec(), data[..64]);
        // Large: the segment's compact descriptor (and, for a memfd, its fd beside it).
        let out = pool.message(&big).unwrap();
        let keep = out.keep.as_ref().unwrap();
        let wire = postcard::to_allocvec(&out.message).unwrap();
        assert!(wire.len() < 256, "{} bytes", wire.len());
        let back: ArrayMessage = postcard::from_bytes(&wire).unwrap();
        assert!(matches!(back, ArrayMessage::Shared(_)));
        let fd = (kind == SegmentKind::Memfd).then(|| keep.fd_for_peer().unwrap());
        let got = opts.open((&back, fd)).unwrap();
        let Received::Mapped(m) = &got else {
            panic!("{kind:?}: not mapped")
        };
        assert_eq!(m.is_frozen(), kind == SegmentKind::Memfd, "{kind:?}");
        assert_eq!(
            got.volatile_view::<f64>().unwrap().to_vec(),
            data,
            "{kind:?}"
        );
        assert_eq!(
            got.into_owned().unwrap().view::<f64>().unwrap()[[63, 63]],
            4095.0
        );
        // The source must match what came with it: a memfd descriptor without its fd, or a
        // path descriptor with one, is refused.
        let back: ArrayMessage = postcard::from_bytes(&wire).unwrap();
        let err = match kind {
            SegmentKind::Memfd => opts.open(&back).unwrap_err(),
            _ => opts
                .open((
                    &back,
                    Some(std::fs::File::open("/dev/null").unwrap().into()),
                ))
                .unwrap_err(),
        };
        assert!(
            matches!(err, StdError::MissingFd | StdError::UnexpectedFd),
            "{kind:?}: {err}"
        );
    }
}

#[test]
fn segments_consumers_wrote_never_serve_the_producers_arrays() {
    for kind in [SegmentKind::File, SegmentKind::Memfd] {
        let h = Harness::new();
        let pool = h.pool(kind);
        let out = pool.alloc_output::<f64>(&[1000], Order::C).unwrap();
        let id = out.descriptor().unwrap().segment_id();
        drop(out);
        wait_until("the segment is on the free list", || pool.stats().free == 1);
        // A consumer may have kept a writable fd or map of it: the producer's own arrays,
        // which lend references, get a fresh segment …
        let a = pool
            .alloc::<f64>(&[1000], Order::C)
            .unwrap()
            .freeze()
            .unwrap();
        assert_ne!(a.descriptor().segment_id(), id, "{kind:?}");
        let data = a.volatile_view().unwrap().to_vec();
        let layout = stridemap::Layout::contiguous(8, &[1000], Order::C).unwrap();
        let bytes = stridemap_shm::ByteView::new(
            bytemuck::cast_slice(&data),
            layout,
            stridemap::DType::parse("<f8").unwrap(),
        )
        .unwrap();
        let shared = pool.share(&bytes).unwrap();
        assert_ne!(shared.descriptor().segment_id(), id, "{kind:?}");
        // … while the next output array reuses it.
        let again = pool.alloc_output::<f64>(&[1000], Order::C).unwrap();
        assert_eq!(again.descriptor().unwrap().segment_id(), id, "{kind:?}");
    }
}

/// Issue 20 item 8: outputs of every kind are sent to workers a view at a time (a block of
/// rows each; for a memfd, with a writable fd), and only views of their own segment.
#[test]
fn outputs_send_views_of_their_own_segment_only() {
    for kind in [SegmentKind::File, SegmentKind::Memfd] {
        let h = Harness::new();
        let pool = h.pool(kind);
        let out = pool.alloc_output::<f64>(&[4, 2], Order::C).unwrap();
        let whole = out.descriptor().unwrap();
        let opts = OpenOptions::new().allow_root(&h.root).mode(Mode::ReadWrite);
        for (k, lo) in [0i64, 2].into_iter().enumerate() {
            let rows = whole
                .layout()
                .slice_axis(0, Slice::range(lo, lo + 2))
                .unwrap();
            let (tx, rx) = UnixStream::pair().unwrap();
            out.send_view(&tx, &whole.to_builder().layout(&rows).build().unwrap())
                .unwrap();
            let mut m = stridemap::socket::recv(&rx)
                .and_then(|i| opts.open(i))
                .unwrap();
            m.volatile_view_mut::<f64>().unwrap().fill(k as f64 + 1.0);
        }
        assert_eq!(
            out.to_vec().unwrap(),
            [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
        );
        // A descriptor of another array is refused, whatever its layout.
        let other = matrix(&pool);
        let (tx, _rx) = UnixStream::pair().unwrap();
        assert!(matches!(
            out.send_view(&tx, other.descriptor()),
            Err(stridemap_shm::Error::NotThisSegment)
        ));
    }
}
