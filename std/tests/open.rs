//! Opening descriptors of real files: joblib's failure cases round-tripped through
//! describe → open, every open-time check failing with its own error, modes, fds, reuse.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, ftruncate, memfd_create};
use stridemap::{Error, OpenOptions, ViewError, npy};
use stridemap_core::{Builder, DType, Mode, Order, Slice, ValidDescriptor};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        Fixture { _dir: dir, root }
    }

    fn opts(&self) -> OpenOptions {
        OpenOptions::new().allow_root(&self.root)
    }

    /// Writes `n` doubles 0, 1, 2, … after `pad` bytes of padding.
    fn write_f64(&self, name: &str, n: usize, pad: usize) -> PathBuf {
        let path = self.root.join(name);
        let data: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![0xEE; pad]).unwrap();
        f.write_all(bytemuck::cast_slice(&data)).unwrap();
        path
    }
}

/// The descriptor of `shape` doubles (C order) at `pad` in the file, identity included.
fn describe(path: &Path, shape: &[u64], pad: u64) -> ValidDescriptor {
    let meta = fs::metadata(path).unwrap();
    let n: u64 = shape.iter().product();
    Builder::new(DType::parse("<f8").unwrap(), shape)
        .buffer(pad, n * 8)
        .file_len(meta.len())
        .identity(meta.dev(), meta.ino())
        .path(path.to_str().unwrap())
        .build()
        .unwrap()
}

#[test]
fn joblib_failure_cases_round_trip() {
    let fx = Fixture::new();
    let path = fx.write_f64("m.bin", 1000, 4096);
    let m = fx.opts().open(&describe(&path, &[1000], 4096)).unwrap();
    let v = m.volatile_view::<f64>().unwrap();
    let cases: Vec<(&str, Slice, Vec<f64>)> = vec![
        (
            "m[::-1]",
            Slice::REVERSED,
            (0..1000).rev().map(f64::from).collect(),
        ),
        (
            "m[::-3]",
            Slice::step(-3),
            (0..1000).rev().step_by(3).map(f64::from).collect(),
        ),
        (
            "m[500:490:-1]",
            Slice::new(Some(500), Some(490), -1),
            (491..=500).rev().map(f64::from).collect(),
        ),
    ];
    for (name, s, want) in cases {
        let sub = v.slice_axis(0, s).unwrap();
        assert_eq!(sub.to_vec(), want, "{name} in place");
        let desc = sub.describe().unwrap();
        assert!(desc.strides()[0] < 0, "{name}");
        let wire = stridemap_core::decode(&desc.to_bytes()).unwrap();
        let again = fx.opts().open(&wire).unwrap();
        assert_eq!(
            again.volatile_view::<f64>().unwrap().to_vec(),
            want,
            "{name} after describe → open"
        );
    }
    // The transpose of a C-ordered 2-d mapping.
    let m2 = fx.opts().open(&describe(&path, &[25, 40], 4096)).unwrap();
    let t = m2.volatile_view::<f64>().unwrap().t();
    let desc = t.describe().unwrap();
    assert_eq!(
        (desc.shape(), desc.strides()),
        (&[40, 25][..], &[8, 320][..])
    );
    let again = fx.opts().open(&desc).unwrap();
    let tv = again.volatile_view::<f64>().unwrap();
    for i in 0..40usize {
        for j in 0..25usize {
            assert_eq!(tv.get(&[i, j]).unwrap(), (j * 40 + i) as f64);
        }
    }
    // A transposed, reversed, strided window, twice described.
    let w = t
        .slice_axis(0, Slice::new(Some(-2), None, -5))
        .unwrap()
        .slice_axis(1, Slice::step(3))
        .unwrap();
    let reopened = fx.opts().open(&w.describe().unwrap()).unwrap();
    assert_eq!(
        reopened.volatile_view::<f64>().unwrap().to_vec(),
        w.to_vec()
    );
}

#[test]
fn each_open_check_has_its_error() {
    let fx = Fixture::new();
    let path = fx.write_f64("a.bin", 100, 0);
    let good = describe(&path, &[100], 0);
    assert!(fx.opts().open(&good).is_ok());

    // O7: a file shorter than the descriptor says (truncated after describing).
    let short = fx.write_f64("short.bin", 100, 0);
    let d = describe(&short, &[100], 0);
    File::options()
        .write(true)
        .open(&short)
        .unwrap()
        .set_len(400)
        .unwrap();
    assert!(matches!(
        fx.opts().open(&d),
        Err(Error::LengthMismatch {
            expected: 800,
            actual: 400
        })
    ));

    // O8: a file replaced after describing (same name, same length, another inode; the old
    // one is renamed away rather than deleted so the filesystem cannot reuse its inode).
    let replaced = fx.write_f64("r.bin", 100, 0);
    let d = describe(&replaced, &[100], 0);
    fs::rename(&replaced, fx.root.join("r.old")).unwrap();
    fx.write_f64("r.bin", 100, 0);
    assert!(matches!(
        fx.opts().open(&d),
        Err(Error::IdentityMismatch { .. })
    ));

    // O2: outside the roots (the default roots only allow stridemap's segment folders).
    let err = OpenOptions::new().open(&good).unwrap_err();
    assert!(matches!(err, Error::OutsideRoots { .. }), "{err}");
    assert_eq!(err.rule(), Some("O2"));

    // O1: `..`, `.`, `//` and relative paths, even when they would land inside the root.
    for p in [
        format!("{}/sub/../a.bin", fx.root.display()),
        format!("{}/./a.bin", fx.root.display()),
        format!("{}//a.bin", fx.root.display()),
        "a.bin".to_string(),
    ] {
        let d = good.to_builder().path(&p).build().unwrap();
        let err = fx.opts().open(&d).unwrap_err();
        assert!(matches!(err, Error::BadPath { .. }), "{p}: {err}");
    }

    // O3: a symlink as the file, and as a folder on the way; both openat2 and the walk.
    std::os::unix::fs::symlink(&path, fx.root.join("link.bin")).unwrap();
    fs::create_dir(fx.root.join("real")).unwrap();
    fs::copy(&path, fx.root.join("real/a.bin")).unwrap();
    std::os::unix::fs::symlink(fx.root.join("real"), fx.root.join("dirlink")).unwrap();
    for opts in [fx.opts(), fx.opts().without_openat2()] {
        for name in ["link.bin", "dirlink/a.bin"] {
            let p = fx.root.join(name);
            let d = Builder::new(DType::parse("<f8").unwrap(), &[100])
                .path(p.to_str().unwrap())
                .build()
                .unwrap();
            let err = opts.open(&d).unwrap_err();
            assert!(matches!(err, Error::Symlink { .. }), "{name}: {err}");
            assert_eq!(err.rule(), Some("O3"));
        }
        // The real file below a real folder opens either way.
        let p = fx.root.join("real/a.bin");
        let d = Builder::new(DType::parse("<f8").unwrap(), &[100])
            .path(p.to_str().unwrap())
            .build()
            .unwrap();
        assert!(opts.open(&d).is_ok());
    }

    // O5: a write request on a read-only descriptor.
    let err = fx.opts().mode(Mode::ReadWrite).open(&good).unwrap_err();
    assert!(matches!(
        err,
        Error::ModeNotAllowed {
            allowed: Mode::ReadOnly,
            wanted: Mode::ReadWrite
        }
    ));

    // O4: missing file; O6: not a regular file.
    let gone = good
        .to_builder()
        .path(fx.root.join("gone.bin").to_str().unwrap())
        .build()
        .unwrap();
    assert!(matches!(fx.opts().open(&gone), Err(Error::Open { .. })));
    fs::create_dir(fx.root.join("adir")).unwrap();
    let dir = Builder::new(DType::parse("|u1").unwrap(), &[0])
        .file_len(4096)
        .path(fx.root.join("adir").to_str().unwrap())
        .build()
        .unwrap();
    let err = fx.opts().open(&dir).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotRegularFile { .. } | Error::LengthMismatch { .. }
        ),
        "{err}"
    );

    // An fd descriptor opened as a path (and the reverse).
    let fd_desc = good.to_builder().fd().build().unwrap();
    assert!(matches!(fx.opts().open(&fd_desc), Err(Error::MissingFd)));
}

#[test]
fn modes_r_plus_and_copy_on_write() {
    let fx = Fixture::new();
    let path = fx.write_f64("w.bin", 16, 0);
    let rw = describe(&path, &[4, 4], 0)
        .to_builder()
        .mode(Mode::ReadWrite)
        .build()
        .unwrap();
    // r+: writes reach the file (another mapping sees them).
    let mut a = fx.opts().mode(Mode::ReadWrite).open(&rw).unwrap();
    a.volatile_view_mut::<f64>()
        .unwrap()
        .index_axis(0, 1)
        .unwrap()
        .fill(-1.0);
    let b = fx.opts().reuse_mappings(false).open(&rw).unwrap();
    assert_eq!(
        b.volatile_view::<f64>()
            .unwrap()
            .index_axis(0, 1)
            .unwrap()
            .to_vec(),
        [-1.0; 4]
    );
    // c: private writes stay in the writer.
    let mut c = fx.opts().mode(Mode::CopyOnWrite).open(&rw).unwrap();
    c.volatile_view_mut::<f64>().unwrap().fill(42.0);
    assert_eq!(
        c.volatile_view::<f64>().unwrap().get(&[3, 3]).unwrap(),
        42.0
    );
    let d = fx.opts().reuse_mappings(false).open(&rw).unwrap();
    assert_eq!(
        d.volatile_view::<f64>().unwrap().get(&[3, 3]).unwrap(),
        15.0
    );
    // c is allowed from an r descriptor; r+ is not; the read-only mapping refuses writes.
    let ro = describe(&path, &[16], 0);
    assert!(fx.opts().mode(Mode::CopyOnWrite).open(&ro).is_ok());
    let mut r = fx.opts().open(&ro).unwrap();
    let refused = r.volatile_view_mut::<f64>().unwrap_err();
    assert!(matches!(refused, ViewError::ReadOnly));
    // The default options map read-only: the refusal names the option that writes.
    assert!(
        refused.to_string().contains(".mode(Mode::ReadWrite)"),
        "{refused}"
    );
    assert!(matches!(r.bytes_mut(), Err(ViewError::ReadOnly)));
    // None of these is frozen (a path-named file), so none lends references …
    assert!(!c.is_frozen() && !r.is_frozen());
    assert!(matches!(c.view::<f64>(), Err(ViewError::NotFrozen)));
    assert!(matches!(r.bytes(), Err(ViewError::NotFrozen)));
    assert!(matches!(r.byte_view(), Err(ViewError::NotFrozen)));
    // … until the owner promises, or it copies the elements out.
    assert_eq!(
        r.copy_array().unwrap().view::<f64>().unwrap().to_vec()[15],
        15.0
    );
    // SAFETY: nothing writes the file while `r` lives (`c`'s writes are private).
    unsafe { r.assume_no_outside_writes() };
    assert_eq!(r.view::<f64>().unwrap().as_slice().unwrap()[15], 15.0);
    assert!(!r.is_frozen());
}

#[test]
fn read_only_mappings_of_one_region_are_reused() {
    let fx = Fixture::new();
    let path = fx.write_f64("big.bin", 1 << 16, 0);
    let whole = describe(&path, &[1 << 16], 0);
    let first = fx.opts().open(&whole).unwrap();
    // Maps of this file only: other tests of this binary map and unmap files meanwhile.
    let maps_of_file = || {
        fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.ends_with(path.to_str().unwrap()))
            .count()
    };
    let maps_before = maps_of_file();
    assert_eq!(maps_before, 1);
    let base = first.as_ptr();
    let views: Vec<_> = (0..100u64)
        .map(|i| {
            let l = whole
                .layout()
                .slice_axis(0, Slice::range(i as i64 * 10, i as i64 * 10 + 10))
                .unwrap();
            fx.opts()
                .open(&whole.to_builder().layout(&l).build().unwrap())
                .unwrap()
        })
        .collect();
    for (i, m) in views.iter().enumerate() {
        assert_eq!(m.as_ptr(), base, "view {i} mapped again");
        assert_eq!(
            m.volatile_view::<f64>().unwrap().get(&[0]).unwrap(),
            i as f64 * 10.0
        );
    }
    let maps_after = maps_of_file();
    assert_eq!(maps_after, maps_before, "{maps_before} → {maps_after}");
    // Writable and private mappings are never shared.
    let cow = fx.opts().mode(Mode::CopyOnWrite).open(&whole).unwrap();
    assert_ne!(cow.as_ptr(), base);
    // Once every mapping is gone, a new open maps afresh (and still reads the file).
    drop(views);
    drop(first);
    let again = fx.opts().open(&whole).unwrap();
    assert_eq!(
        again.volatile_view::<f64>().unwrap().get(&[7]).unwrap(),
        7.0
    );
}

fn memfd_with(data: &[u8], seals: SealFlags) -> (OwnedFd, u64, u64) {
    let fd = memfd_create(
        "stridemap-test",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    ftruncate(&fd, data.len() as u64).unwrap();
    rustix::io::write(&fd, data).unwrap();
    if !seals.is_empty() {
        fcntl_add_seals(&fd, seals).unwrap();
    }
    let st = rustix::fs::fstat(&fd).unwrap();
    (fd, st.st_dev, st.st_ino)
}

#[test]
fn fd_sources_need_seals() {
    let data: Vec<f64> = (0..64).map(f64::from).collect();
    let bytes: &[u8] = bytemuck::cast_slice(&data);
    let desc = |dev, ino| {
        Builder::new(DType::parse("<f8").unwrap(), &[8, 8])
            .order(Order::C)
            .fd()
            .file_len(512)
            .identity(dev, ino)
            .build()
            .unwrap()
    };
    let (fd, dev, ino) = memfd_with(bytes, SealFlags::SHRINK | SealFlags::GROW);
    let m = OpenOptions::new().open((&desc(dev, ino), fd)).unwrap();
    assert_eq!(
        m.volatile_view::<f64>().unwrap().t().get(&[1, 2]).unwrap(),
        17.0
    );

    let (fd, dev, ino) = memfd_with(bytes, SealFlags::empty());
    let err = OpenOptions::new().open((&desc(dev, ino), fd)).unwrap_err();
    assert!(matches!(err, Error::NotSealed { seals: Some(_) }), "{err}");
    assert_eq!(err.rule(), Some("O9"));
    let (fd, dev, ino) = memfd_with(bytes, SealFlags::empty());
    assert!(
        OpenOptions::new()
            .allow_unsealed_fds(true)
            .open((&desc(dev, ino), fd))
            .is_ok()
    );

    // A regular file passed as an fd cannot be sealed.
    let fx = Fixture::new();
    let path = fx.write_f64("f.bin", 64, 0);
    let meta = fs::metadata(&path).unwrap();
    let fd: OwnedFd = File::open(&path).unwrap().into();
    let err = OpenOptions::new()
        .open((&desc(meta.dev(), meta.ino()), fd))
        .unwrap_err();
    assert!(matches!(err, Error::NotSealed { seals: None }), "{err}");
    // A path descriptor given an fd.
    let fd: OwnedFd = File::open(&path).unwrap().into();
    assert!(matches!(
        OpenOptions::new().open((&describe(&path, &[64], 0), fd)),
        Err(Error::UnexpectedFd)
    ));
    // And the pair: an fd descriptor opened without its fd.
    let (_, dev, ino) = memfd_with(bytes, SealFlags::SHRINK);
    assert!(matches!(
        OpenOptions::new().open((&desc(dev, ino), None)),
        Err(Error::MissingFd)
    ));
}

#[test]
fn only_frozen_memfds_lend_references() {
    let data: Vec<f64> = (0..64).map(f64::from).collect();
    let bytes: &[u8] = bytemuck::cast_slice(&data);
    let desc = |dev, ino| {
        Builder::new(DType::parse("<f8").unwrap(), &[8, 8])
            .fd()
            .file_len(512)
            .identity(dev, ino)
            .build()
            .unwrap()
    };
    let opts = OpenOptions::new().reuse_mappings(false);
    // Sealed against resizing but not writes: a peer may still write it.
    let (fd, dev, ino) = memfd_with(bytes, SealFlags::SHRINK | SealFlags::GROW);
    let m = opts.open((&desc(dev, ino), fd)).unwrap();
    assert!(!m.is_frozen());
    assert!(matches!(m.view::<f64>(), Err(ViewError::NotFrozen)));
    assert_eq!(
        m.volatile_view::<f64>().unwrap().iter().sum::<f64>(),
        2016.0
    );
    // F_SEAL_FUTURE_WRITE alone is not frozen: a map made before it stays writable (issue 20).
    let future = SealFlags::SHRINK | SealFlags::GROW | SealFlags::FUTURE_WRITE;
    let (fd, dev, ino) = memfd_with(bytes, future);
    let m = opts.open((&desc(dev, ino), fd)).unwrap();
    assert!(!m.is_frozen());
    assert!(matches!(m.bytes(), Err(ViewError::NotFrozen)));
    assert!(matches!(m.view::<f64>(), Err(ViewError::NotFrozen)));
    assert_eq!(
        m.volatile_view::<f64>().unwrap().iter().sum::<f64>(),
        2016.0
    );
    let (fd, dev, ino) = memfd_with(bytes, future);
    let mut c = opts
        .clone()
        .mode(Mode::CopyOnWrite)
        .open((&desc(dev, ino), fd))
        .unwrap();
    assert!(!c.is_frozen());
    assert!(matches!(c.view_mut::<f64>(), Err(ViewError::NotFrozen)));
    // Frozen: resizing and writes sealed with F_SEAL_WRITE, checked on the fd itself.
    let sealed = SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE;
    let (fd, dev, ino) = memfd_with(bytes, sealed);
    let m = opts.open((&desc(dev, ino), fd)).unwrap();
    assert!(m.is_frozen());
    let v = m.view::<f64>().unwrap();
    assert_eq!(v.as_slice().unwrap().iter().sum::<f64>(), 2016.0);
    assert_eq!(m.view::<f64>().unwrap().iter().sum::<f64>(), 2016.0);
    assert_eq!(v[[7, 7]], 63.0);
    assert_eq!(m.bytes().unwrap().len(), 512);
    // Copy-on-write of a frozen file is frozen too (nobody can write the file).
    let (fd, dev, ino) = memfd_with(bytes, sealed);
    let mut c = opts
        .clone()
        .mode(Mode::CopyOnWrite)
        .open((&desc(dev, ino), fd))
        .unwrap();
    assert!(c.is_frozen());
    c.view_mut::<f64>().unwrap().fill(1.0);
    assert_eq!(c.view::<f64>().unwrap().iter().sum::<f64>(), 64.0);
}

/// Issue 20, item 1, in safe code only: a writable map made before `F_SEAL_FUTURE_WRITE`
/// (here a second mapping of this process, opened `r+`) still writes the memfd after the
/// seal. A consumer of that memfd must not get a slice: before the fix `bytes()` lent one,
/// and the write below changed it under the live reference.
#[test]
fn a_future_write_seal_is_not_frozen_while_an_older_writable_map_writes() {
    let data: Vec<f64> = (0..64).map(f64::from).collect();
    let (fd, dev, ino) = memfd_with(
        bytemuck::cast_slice(&data),
        SealFlags::SHRINK | SealFlags::GROW,
    );
    let desc = Builder::new(DType::parse("<f8").unwrap(), &[64])
        .fd()
        .file_len(512)
        .identity(dev, ino)
        .mode(Mode::ReadWrite)
        .build()
        .unwrap();
    let opts = OpenOptions::new().reuse_mappings(false);
    // The producer's writable map, made before the seal.
    let mut producer = opts
        .clone()
        .mode(Mode::ReadWrite)
        .open((&desc, fd.try_clone().unwrap()))
        .unwrap();
    fcntl_add_seals(&fd, SealFlags::FUTURE_WRITE).unwrap();
    // The kernel refuses new writers now …
    assert!(rustix::io::write(&fd, &[0u8]).is_err());
    // … but the consumer gets no reference: only element copies.
    let consumer = opts.open((&desc, fd)).unwrap();
    assert!(!consumer.is_frozen());
    assert!(matches!(consumer.bytes(), Err(ViewError::NotFrozen)));
    assert!(matches!(consumer.view::<f64>(), Err(ViewError::NotFrozen)));
    assert!(matches!(consumer.byte_view(), Err(ViewError::NotFrozen)));
    let v = consumer.volatile_view::<f64>().unwrap();
    assert_eq!(v.get(&[0]).unwrap(), 0.0);
    // The old map still writes, and the consumer's copies see it: values change, soundness
    // does not.
    producer
        .volatile_view_mut::<f64>()
        .unwrap()
        .set(&[0], 666.0)
        .unwrap();
    assert_eq!(v.get(&[0]).unwrap(), 666.0);
}

#[test]
fn npy_files_are_described_in_place_and_written_back() {
    let fx = Fixture::new();
    let data: Vec<i32> = (0..24).collect();
    let src = stridemap::ByteView::new(
        bytemuck::cast_slice(&data),
        stridemap_core::Layout::contiguous(4, &[2, 3, 4], Order::C).unwrap(),
        DType::parse("<i4").unwrap(),
    )
    .unwrap();
    // A transposed, reversed view written as a contiguous .npy …
    let view = src.t().slice_axis(0, Slice::REVERSED).unwrap();
    let path = fx.root.join("x.npy");
    npy::write_file(&view, &path).unwrap();
    // … is described where its data lies and reads back as the view's elements.
    let desc = npy::describe(&path).unwrap();
    assert_eq!(desc.shape(), &[4, 3, 2]);
    assert_eq!(desc.buffer_offset() % 64, 0);
    let m = fx.opts().open(&desc).unwrap();
    let got = m.volatile_view::<i32>().unwrap().to_vec();
    let want: Vec<i32> = view
        .elements()
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got, want);
    // A truncated .npy is an error, not a crash.
    let bytes = fs::read(&path).unwrap();
    let cut = fx.root.join("cut.npy");
    fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    assert!(matches!(npy::describe(&cut), Err(Error::Npy { .. })));
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_views_and_descriptors() {
    let fx = Fixture::new();
    let path = fx.write_f64("nd.bin", 60, 0);
    let whole = describe(&path, &[3, 4, 5], 0);
    let mut m = fx.opts().open(&whole).unwrap();
    // A copy as an owned ndarray works on any mapping.
    let copied = m.volatile_view::<f64>().unwrap().to_ndarray().unwrap();
    assert_eq!((copied.shape(), copied[[2, 3, 4]]), (&[3, 4, 5][..], 59.0));
    // SAFETY: nothing writes the file while `m` lives (the r+ mapping below comes after).
    unsafe { m.assume_no_outside_writes() };
    let v = m
        .view::<f64>()
        .unwrap()
        .slice_axis(2, Slice::REVERSED)
        .unwrap()
        .t();
    let a = v.as_ndarray().unwrap();
    assert_eq!(a.shape(), &[5, 4, 3]);
    // to_ndarray copies, on a View as on a VolatileView.
    assert_eq!(v.to_ndarray().unwrap(), a.to_owned());
    for (ix, x) in a.indexed_iter() {
        assert_eq!(v.get(ndarray::Dimension::slice(&ix)).unwrap(), x);
    }
    // An ndarray slice of it, described and opened again.
    let s = a.slice(ndarray::s![1..4;2, ..;-1, 1]).into_dyn();
    let desc = m.describe_array(&s).unwrap();
    let again = fx.opts().open(&desc).unwrap();
    let got = again.volatile_view::<f64>().unwrap().to_vec();
    assert_eq!(got, s.iter().copied().collect::<Vec<_>>());
    // A heap array is not in the mapping.
    let heap = ndarray::Array2::<f64>::zeros((2, 2)).into_dyn();
    assert!(matches!(
        m.describe_array(&heap.view()),
        Err(ViewError::NotInMapping) | Err(ViewError::Descriptor(_))
    ));
    drop(m);
    // A mutable ndarray view writes through an r+ mapping; broadcast layouts are refused.
    let rw = whole.to_builder().mode(Mode::ReadWrite).build().unwrap();
    let mut w = fx.opts().mode(Mode::ReadWrite).open(&rw).unwrap();
    // SAFETY: this test is the only writer of the file while `w` lives.
    unsafe { w.assume_no_outside_writes() };
    let mut nd = w
        .view_mut::<f64>()
        .unwrap()
        .index_axis(0, 2)
        .unwrap()
        .into_ndarray()
        .unwrap();
    nd.fill(7.0);
    assert_eq!(
        fx.opts()
            .reuse_mappings(false)
            .open(&whole)
            .unwrap()
            .volatile_view::<f64>()
            .unwrap()
            .get(&[2, 3, 4])
            .unwrap(),
        7.0
    );
}

#[test]
fn a_root_folder_made_again_is_found_again() {
    let fx = Fixture::new();
    let root = fx.root.join("r");
    fs::create_dir(&root).unwrap();
    let opts = OpenOptions::new().allow_root(&root);
    let write = |n: usize| {
        let p = root.join("a.bin");
        let data: Vec<f64> = (0..n).map(|i| i as f64).collect();
        File::create(&p)
            .unwrap()
            .write_all(bytemuck::cast_slice(&data))
            .unwrap();
        describe(&p, &[n as u64], 0)
    };
    let d = write(4);
    assert_eq!(
        opts.open(&d).unwrap().volatile_view::<f64>().unwrap().len(),
        4
    );
    // The root (whose fd the options cached) is removed and made again.
    fs::remove_dir_all(&root).unwrap();
    fs::create_dir(&root).unwrap();
    let d = write(6);
    assert_eq!(
        opts.open(&d).unwrap().volatile_view::<f64>().unwrap().len(),
        6
    );
}

/// The entry points before `OpenOptions::open` still work, as thin deprecated wrappers of it,
/// and the volatile views' old names are aliases.
#[test]
#[allow(deprecated)]
fn deprecated_opens_are_wrappers_of_the_one_open() {
    let fx = Fixture::new();
    let path = fx.write_f64("old.bin", 4, 0);
    let d = describe(&path, &[4], 0);
    let read = |m: stridemap::Mapping| {
        // The views' old name is an alias of the new one.
        let v: stridemap::SharedView<'_, f64> = m.volatile_view().unwrap();
        v.to_vec()
    };
    assert_eq!(
        read(stridemap::open(&d, &fx.opts()).unwrap()),
        [0.0, 1.0, 2.0, 3.0]
    );
    assert_eq!(
        read(stridemap::open_source(&d, None, &fx.opts()).unwrap()),
        [0.0, 1.0, 2.0, 3.0]
    );
    let fd: OwnedFd = File::open(&path).unwrap().into();
    assert!(matches!(
        stridemap::open_fd(&d, fd, &fx.opts()),
        Err(Error::UnexpectedFd)
    ));
    let (tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
    stridemap::socket::send(&tx, &d, None).unwrap();
    let incoming = stridemap::socket::recv(&rx).unwrap();
    assert_eq!(
        read(incoming.open(&fx.opts()).unwrap()),
        [0.0, 1.0, 2.0, 3.0]
    );
    let msg = stridemap::message::ArrayMessage::Shared(d.to_compact());
    let got = msg.open(None, &fx.opts()).unwrap();
    assert_eq!(
        got.volatile_view::<f64>().unwrap().to_vec(),
        [0.0, 1.0, 2.0, 3.0]
    );
}
