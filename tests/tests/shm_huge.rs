//! Huge pages for new segments, on this machine's kernel: a tmpfs mounted `huge=always`, a
//! few reserved hugetlb pages, and `shmem_enabled=advise` (as root, each restored right after,
//! serialized with a lock file shared with the Python tests), checked in `/proc/self/smaps`
//! for the producer's map and a consumer's; `Never` gives base pages; `Require` without any
//! mechanism gives the clear error; without root, `Auto` still falls back to base pages and
//! the tests say what they could not exercise.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};

use stridemap::{Mapping, OpenOptions};
use stridemap_core::Order;
use stridemap_shm::{
    Error, HugePages, PageBacking, Pool, PoolConfig, SegmentKind, SharedArray, huge_probe,
    mapping_huge_page_bytes,
};
use stridemap_tests::python::python;

const MIB: u64 = 1 << 20;
const SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// One test at a time in this process, and across processes (the Python tests toggle the
/// same settings) a lock file.
struct Serial {
    _in_process: MutexGuard<'static, ()>,
    _file: File,
}

fn serial() -> Serial {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    // Read-only is enough for flock, and works when another user made the file.
    let file = File::from(
        rustix::fs::open(
            std::env::temp_dir().join("stridemap-huge-pages-tests.lock"),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap(),
    );
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).unwrap();
    Serial {
        _in_process: guard,
        _file: file,
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A system setting written for the length of a test, restored on drop (also on a failing
/// assertion, which unwinds).
struct Setting {
    path: &'static str,
    old: String,
}

impl Setting {
    /// Writes `value`; `None` (with the reason printed) when this sandbox refuses.
    fn set(path: &'static str, value: &str) -> Option<Setting> {
        let text = std::fs::read_to_string(path).ok()?;
        let old = match text.find('[') {
            Some(i) => text[i + 1..].split(']').next()?.to_string(),
            None => text.trim().to_string(),
        };
        match std::fs::write(path, value) {
            Ok(()) => Some(Setting { path, old }),
            Err(e) => {
                eprintln!("note: cannot write {value} to {path} ({e}); not exercised");
                None
            }
        }
    }
}

impl Drop for Setting {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.path, &self.old) {
            eprintln!(
                "WARNING: could not restore {} to {}: {e}",
                self.path, self.old
            );
        }
    }
}

/// A tmpfs mounted at a temp dir with `opts`, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(opts: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("note: cannot mount a tmpfs with {opts} here; not exercised");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pool(kind: SegmentKind, mode: HugePages, root: Option<&Path>) -> Pool {
    let mut cfg = PoolConfig::default()
        .kind(kind)
        .huge_pages(mode)
        .sweep_on_start(false);
    if let Some(r) = root {
        cfg = cfg.temp_folder(r);
    }
    Pool::with_config(cfg).unwrap()
}

/// A frozen array of `bytes` bytes of f64 values 0, 1, 2, …
fn filled(pool: &Pool, bytes: u64) -> SharedArray<f64> {
    let mut a = pool
        .alloc::<f64>(&[(bytes / 8) as usize], Order::C)
        .unwrap();
    let n = a.layout().len() as usize;
    let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
    a.copy_from_slice(&values).unwrap();
    a.freeze().unwrap()
}

/// A consumer's map of `a` (fd passed over a socket for a memfd), every page read once.
fn consume<T>(a: &SharedArray<T>, root: Option<&Path>) -> Mapping {
    let opts = match root {
        Some(r) => OpenOptions::new().allow_root(r),
        None => OpenOptions::new(),
    };
    let m = if a.is_memfd() {
        let (tx, rx) = UnixStream::pair().unwrap();
        a.send(&tx).unwrap();
        opts.open(stridemap::socket::recv(&rx).unwrap()).unwrap()
    } else {
        opts.open(a.descriptor()).unwrap()
    };
    // Named files are not frozen: element copies, one per page.
    let v = m.volatile_view::<f64>().unwrap();
    let n = v.len();
    let mut sum = 0.0;
    for i in (0..n).step_by(512) {
        sum += v.get(&[i]).unwrap();
    }
    let expect: f64 = (0..n).step_by(512).map(|i| i as f64).sum();
    assert_eq!(sum, expect, "the consumer reads what the producer wrote");
    m
}

/// A consumer's map of a memfd segment nobody wrote, every page read once (all zeros).
fn consume_zeros<T>(a: &SharedArray<T>) -> Mapping {
    let (tx, rx) = UnixStream::pair().unwrap();
    a.send(&tx).unwrap();
    let m = OpenOptions::new()
        .open(stridemap::socket::recv(&rx).unwrap())
        .unwrap();
    // A frozen memfd: its bytes are lent as a slice.
    let bytes = m.bytes().unwrap();
    let zeros = bytes.iter().step_by(4096).filter(|&&b| b == 0).count();
    assert_eq!(zeros, bytes.len().div_ceil(4096));
    m
}

/// The checks every huge segment passes: the mechanism, capacities in whole huge pages with
/// the data at the huge page size, and the producer's and a consumer's maps really huge.
fn assert_huge<T>(a: &SharedArray<T>, want: PageBacking, bytes: u64, root: Option<&Path>) {
    let h = huge_probe(SegmentKind::Memfd, None, 0).page_size;
    assert_eq!(a.page_backing().unwrap(), want);
    let d = a.descriptor();
    assert_eq!(d.buffer_offset(), h, "data at the huge page size");
    assert_eq!(d.file_len() % h, 0, "whole huge pages");
    let producer = a.huge_page_bytes().unwrap();
    assert!(
        producer >= bytes,
        "{want}: only {producer} of {bytes} bytes huge-mapped in the producer"
    );
    let m = consume(a, root);
    let consumer = mapping_huge_page_bytes(&m).unwrap();
    assert!(
        consumer >= bytes,
        "{want}: only {consumer} of {bytes} bytes huge-mapped in the consumer"
    );
    eprintln!("{want}: producer {producer} bytes huge-mapped, consumer {consumer}");
}

#[test]
fn a_tmpfs_mounted_huge_always_gives_huge_file_segments_and_recycles_them() {
    let _s = serial();
    if !is_root() {
        eprintln!("note: not root: no huge= tmpfs mounted; the file fallback is tested instead");
        return auto_falls_back_to_base_pages_on_a_plain_folder();
    }
    let Some(t) = Tmpfs::mount("size=64m,huge=always") else {
        return auto_falls_back_to_base_pages_on_a_plain_folder();
    };
    let p = Pool::with_config(
        PoolConfig::default()
            .temp_folder(t.path())
            .sweep_on_start(false),
    )
    .unwrap();
    let a = filled(&p, 8 * MIB);
    assert_huge(&a, PageBacking::ThpFile, 8 * MIB, Some(t.path()));
    let capacity = a.descriptor().file_len();
    drop(a);
    // Recycling: the released segment serves the next array of its size class.
    p.collect();
    assert_eq!(p.stats().free, 1, "the segment waits for reuse");
    let b = filled(&p, 7 * MIB + 12345 / 8 * 8);
    assert_eq!(b.descriptor().file_len(), capacity, "reused, same class");
    assert_eq!(b.page_backing().unwrap(), PageBacking::ThpFile);
    assert!(b.huge_page_bytes().unwrap() >= 6 * MIB);
    // Small arrays (under one huge page) keep base pages and the usual layout under Auto.
    let small = filled(&p, 64 << 10);
    assert_eq!(small.page_backing().unwrap(), PageBacking::Base);
    assert_eq!(small.descriptor().buffer_offset(), 4096);
    drop((b, small, p));
}

/// Issue 20, item 5: an output array in huge pages has its data at the huge page size, and
/// the producer's views of it must use that offset too. A worker writes 7.0 at element 0
/// through the descriptor; the producer reads it back (it read 0.0, 2 MiB off, before).
#[test]
fn huge_page_outputs_are_read_and_written_at_the_descriptors_data_offset() {
    let _s = serial();
    if !is_root() {
        eprintln!("note: not root: no huge= tmpfs mounted; huge-page outputs not exercised");
        return;
    }
    let Some(t) = Tmpfs::mount("size=64m,huge=always") else {
        return;
    };
    let p = pool(SegmentKind::File, HugePages::Auto, Some(t.path()));
    let n = 4 * MIB / 8;
    let mut out = p.alloc_output::<f64>(&[n as usize], Order::C).unwrap();
    let desc = out.descriptor().unwrap();
    let h = huge_probe(SegmentKind::File, Some(t.path()), 4 * MIB).page_size;
    assert_eq!(
        desc.buffer_offset(),
        h,
        "the data starts at the huge page size"
    );
    // The producer writes its last element; the worker reads it where the descriptor says.
    out.volatile_view_mut()
        .unwrap()
        .set(&[n as usize - 1], 3.0)
        .unwrap();
    let opts = OpenOptions::new()
        .allow_root(t.path())
        .mode(stridemap_core::Mode::ReadWrite);
    let mut m = opts.open(&desc).unwrap();
    let mut w = m.volatile_view_mut::<f64>().unwrap();
    assert_eq!(
        w.get(&[n as usize - 1]).unwrap(),
        3.0,
        "the worker sees the producer's write"
    );
    w.set(&[0], 7.0).unwrap();
    drop(m);
    // The producer sees the worker's write at element 0.
    assert_eq!(out.volatile_view().unwrap().get(&[0]).unwrap(), 7.0);
    assert_eq!(out.to_vec().unwrap()[0], 7.0);
    drop((out, p));
}

fn auto_falls_back_to_base_pages_on_a_plain_folder() {
    // A folder on the disk (not tmpfs): no huge pages for named files; Auto gives base pages
    // and says why.
    let dir = tempfile::tempdir().unwrap();
    let probe = huge_probe(SegmentKind::File, Some(dir.path()), 8 * MIB);
    eprintln!(
        "named files in {}: {}",
        dir.path().display(),
        probe.summary()
    );
    let p = pool(SegmentKind::File, HugePages::Auto, Some(dir.path()));
    let a = filled(&p, 8 * MIB);
    let want = probe.chosen().map_or(PageBacking::Base, |c| c.backing);
    assert_eq!(a.page_backing().unwrap(), want, "{}", probe.summary());
    drop(consume(&a, Some(dir.path())));
}

#[test]
fn auto_falls_back_without_huge_pages_and_the_segment_works() {
    let _s = serial();
    auto_falls_back_to_base_pages_on_a_plain_folder();
    // memfds under Auto: whatever this machine offers now, the segment works end to end.
    let probe = huge_probe(SegmentKind::Memfd, None, 8 * MIB);
    eprintln!("memfd segments here: {}", probe.summary());
    let p = pool(SegmentKind::Memfd, HugePages::Auto, None);
    let a = filled(&p, 8 * MIB);
    let got = a.page_backing().unwrap();
    if probe.chosen().is_none() {
        assert_eq!(got, PageBacking::Base);
        assert_eq!(a.descriptor().buffer_offset(), 4096);
    }
    drop(consume(&a, None));
}

/// Reserves `n` more hugetlb pages of the default size for the test; `None` (said) when the
/// kernel gives fewer.
struct Reserved {
    _setting: Setting,
}

fn reserve_hugetlb(n: u64) -> Option<Reserved> {
    let before = meminfo("HugePages_Total:");
    let setting = Setting::set(NR_HUGEPAGES, &(before + n).to_string())?;
    let after = meminfo("HugePages_Total:");
    if after < before + n {
        eprintln!(
            "note: the kernel reserved {} of {n} hugetlb pages; not exercised",
            after - before
        );
        return None;
    }
    Some(Reserved { _setting: setting })
}

#[test]
fn reserved_hugetlb_pages_back_memfd_segments() {
    let _s = serial();
    if !is_root() {
        eprintln!("note: not root: no hugetlb pages reserved; hugetlb segments not exercised");
        return;
    }
    let Some(_r) = reserve_hugetlb(8) else { return };
    let free = meminfo("HugePages_Free:");
    let p = pool(SegmentKind::Memfd, HugePages::Auto, None);
    let a = filled(&p, 4 * MIB);
    // 2 pages of data and 1 for the header, reserved when the segment was made.
    assert_eq!(
        free - meminfo("HugePages_Free:"),
        3,
        "HugePages_Free dropped by 3"
    );
    assert_huge(&a, PageBacking::HugetlbMemfd, 4 * MIB, None);
    // A consumer's map of it: the whole data area (whole huge pages), unmapped cleanly.
    assert_eq!(a.descriptor().buffer_len(), 4 * MIB);
    drop(a);
    p.collect();
    // Recycled: the next 4 MiB array takes the same pages, the pool makes none.
    let b = filled(&p, 3 * MIB);
    assert_eq!(free - meminfo("HugePages_Free:"), 3, "reused, no new pages");
    assert_eq!(b.page_backing().unwrap(), PageBacking::HugetlbMemfd);
    drop((b, p));
    assert_eq!(
        meminfo("HugePages_Free:"),
        free,
        "all pages back when the pool is gone"
    );
    // Asking for more than is free: Auto falls back (here to base pages or THP), never fails.
    if free > 16 {
        eprintln!("note: {free} hugetlb pages free here; the fallback is not exercised");
        return;
    }
    let p = pool(SegmentKind::Memfd, HugePages::Auto, None);
    let big = filled(&p, 32 * MIB);
    assert_ne!(big.page_backing().unwrap(), PageBacking::HugetlbMemfd);
    drop((big, p));
}

#[test]
fn a_hugetlbfs_temp_root_holds_named_segments_in_hugetlb_pages() {
    let _s = serial();
    if !is_root() {
        eprintln!("note: not root: no hugetlbfs mounted; hugetlbfs segments not exercised");
        return;
    }
    let Some(_r) = reserve_hugetlb(8) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "none"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("note: cannot mount hugetlbfs here; not exercised");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(dir.path());
    let free = meminfo("HugePages_Free:");
    // Even Never: a hugetlbfs root has no base pages.
    let p = pool(SegmentKind::File, HugePages::Never, Some(dir.path()));
    let a = filled(&p, 4 * MIB);
    assert_eq!(free - meminfo("HugePages_Free:"), 3);
    assert_huge(&a, PageBacking::HugetlbFile, 4 * MIB, Some(dir.path()));
    let small = filled(&p, 64 << 10);
    assert_eq!(small.page_backing().unwrap(), PageBacking::HugetlbFile);
    drop(consume(&small, Some(dir.path())));
    drop((a, small, p));
    assert_eq!(
        meminfo("HugePages_Free:"),
        free,
        "pages back, files removed"
    );
}

#[test]
fn hugetlb_segments_cross_between_rust_and_python() {
    let _s = serial();
    if !is_root() {
        eprintln!("note: not root: no hugetlbfs mounted; cross-language hugetlb not exercised");
        return;
    }
    let Some(_r) = reserve_hugetlb(16) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "none"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("note: cannot mount hugetlbfs here; not exercised");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _u = Unmount(dir.path());
    // Rust makes it (data at 2 MiB, the buffer whole pages), Python reads m[::-3].
    let p = pool(SegmentKind::File, HugePages::Auto, Some(dir.path()));
    let a = filled(&p, 4 * MIB);
    assert_eq!(a.page_backing().unwrap(), PageBacking::HugetlbFile);
    // (Records go elsewhere: hugetlbfs files cannot be written with write(2).)
    let recs = tempfile::tempdir().unwrap();
    let rec = recs.path().join("rust.rec");
    std::fs::write(&rec, a.descriptor().to_bytes()).unwrap();
    let script = r#"
import sys, numpy as np, stridemap
rec, root, out = sys.argv[1:4]
v = stridemap.open(open(rec, "rb").read(), allowed_roots=[root])
print(float(v[::-3].sum()))
a = np.arange(1 << 19, dtype="f8")  # 4 MiB
s = stridemap.share(a, kind="file", temp_folder=root)
assert stridemap.huge.page_backing(s) == "hugetlb-file", stridemap.huge.page_backing(s)
e = stridemap.export(s[::-3])
open(out, "wb").write(e.record)
print(e.segment.folder)
sys.stdout.flush()
sys.stdin.read()  # keep the segment until Rust has read it
"#;
    let out = recs.path().join("py.rec");
    let mut child = Command::new(python())
        .args(["-c", script])
        .arg(&rec)
        .arg(dir.path())
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let sum: f64 = lines.next().unwrap().unwrap().parse().unwrap();
    let n = 4 * MIB / 8;
    let want: f64 = (0..n).rev().step_by(3).map(|i| i as f64).sum();
    assert_eq!(sum, want, "Python read the Rust hugetlb segment");
    // Python makes one, Rust reads it.
    let folder = lines.next().unwrap().unwrap();
    let desc = stridemap_core::decode(&std::fs::read(&out).unwrap()).unwrap();
    let m = OpenOptions::new().allow_root(&folder).open(&desc).unwrap();
    let got: f64 = m.volatile_view::<f64>().unwrap().iter().sum();
    let want: f64 = (0..(1u64 << 19)).rev().step_by(3).map(|i| i as f64).sum();
    assert_eq!(got, want, "Rust read the Python hugetlb segment");
    assert!(mapping_huge_page_bytes(&m).unwrap() >= 4 * MIB - 2 * MIB);
    drop(m);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    drop((a, p));
}

#[test]
fn shmem_enabled_advise_gives_thp_memfd_segments_and_never_gives_base_pages() {
    let _s = serial();
    if !is_root() {
        eprintln!("note: not root: shmem_enabled not changed; THP memfd segments not exercised");
        return;
    }
    if meminfo("HugePages_Free:") > meminfo("HugePages_Rsvd:") {
        eprintln!("note: hugetlb pages are free here, so Auto would take those; not exercised");
        return;
    }
    let Some(_thp) = Setting::set(SHMEM_ENABLED, "advise") else {
        return;
    };
    let p = pool(SegmentKind::Memfd, HugePages::Auto, None);
    let a = filled(&p, 16 * MIB);
    assert_huge(&a, PageBacking::ThpMemfd, 16 * MIB, None);
    // share() (written once from existing data) gets them too.
    let data: Vec<f64> = (0..(4 * MIB / 8)).map(|i| i as f64).collect();
    let layout = stridemap_core::Layout::contiguous(8, &[data.len() as u64], Order::C).unwrap();
    let view = stridemap::ByteView::new(
        bytemuck::cast_slice(&data),
        layout,
        stridemap_core::DType::parse("<f8").unwrap(),
    )
    .unwrap();
    let s = p.share(&view).unwrap();
    assert_huge(&s, PageBacking::ThpMemfd, 4 * MIB, None);
    // Pages nobody wrote yet (alloc() of a THP memfd reserves nothing) come in when a consumer
    // reads them: huge too, since the consumer's map asks for them (MADV_HUGEPAGE).
    let holes = p
        .alloc::<f64>(&[MIB as usize], Order::C)
        .unwrap()
        .freeze()
        .unwrap();
    assert_eq!(holes.page_backing().unwrap(), PageBacking::ThpMemfd);
    let m = consume_zeros(&holes);
    let read = mapping_huge_page_bytes(&m).unwrap();
    assert!(
        read >= 8 * MIB,
        "holes read by a consumer: {read} bytes huge"
    );
    drop((m, holes));
    // Never: the same system, base pages, the usual layout, nothing huge-mapped.
    let n = pool(SegmentKind::Memfd, HugePages::Never, None);
    let b = filled(&n, 16 * MIB);
    assert_eq!(b.page_backing().unwrap(), PageBacking::Base);
    assert_eq!(b.descriptor().buffer_offset(), 4096);
    assert_eq!(b.huge_page_bytes().unwrap(), 0, "Never gives 4 KiB pages");
    assert_eq!(mapping_huge_page_bytes(&consume(&b, None)).unwrap(), 0);
    drop((a, s, b, p, n));
}

#[test]
fn require_without_any_mechanism_is_the_clear_error() {
    let _s = serial();
    // Named files in a folder on disk: no huge= tmpfs, and the error says how to get one.
    let dir = tempfile::tempdir().unwrap();
    let probe = huge_probe(SegmentKind::File, Some(dir.path()), 8 * MIB);
    if probe.chosen().is_none() {
        let p = pool(SegmentKind::File, HugePages::Require, Some(dir.path()));
        match p.alloc::<f64>(&[MIB as usize], Order::C) {
            Err(e @ Error::HugePagesUnavailable { .. }) => {
                let text = e.to_string();
                for want in [
                    "huge=within_size",
                    "STRIDEMAP_TEMP_FOLDER",
                    "HugePages::Auto",
                ] {
                    assert!(text.contains(want), "{want} not in: {text}");
                }
            }
            other => panic!("expected HugePagesUnavailable, got {other:?}"),
        }
        assert_eq!(
            entries(dir.path()),
            1,
            "only the (empty) pool folder, no segment"
        );
    } else {
        eprintln!(
            "note: {} offers huge pages ({}); File Require not exercised",
            dir.path().display(),
            probe.summary()
        );
    }
    // memfds: no free hugetlb pages and shmem_enabled=never. As root that state is made
    // (shmem_enabled written, restored after; no hugetlb pages are reserved by this test);
    // without root it is tested only when it is this machine's state already.
    let _never = if is_root() {
        Setting::set(SHMEM_ENABLED, "never")
    } else {
        None
    };
    let probe = huge_probe(SegmentKind::Memfd, None, 8 * MIB);
    if probe.chosen().is_some() {
        eprintln!(
            "note: memfd huge pages are available here ({}); memfd Require not exercised",
            probe.summary()
        );
        return;
    }
    let p = pool(SegmentKind::Memfd, HugePages::Require, None);
    match p.alloc::<f64>(&[MIB as usize], Order::C) {
        Err(e @ Error::HugePagesUnavailable { .. }) => {
            let text = e.to_string();
            for want in ["vm.nr_hugepages", "shmem_enabled", "advise", "memfd"] {
                assert!(text.contains(want), "{want} not in: {text}");
            }
            eprintln!("the error: {text}");
        }
        other => panic!("expected HugePagesUnavailable, got {other:?}"),
    }
}

/// Files and folders below `dir`, recursively.
fn entries(dir: &Path) -> usize {
    let mut n = 0;
    let mut todo: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            n += 1;
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
        }
    }
    n
}
