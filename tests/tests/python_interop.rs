//! Live interop with the Python reader (`python`), driven through the small scripts
//! in `tests/python/` (JSON lines on their stdout, a socket path in argv):
//!
//! - a Rust producer (`stridemap_shm::Pool`) and a Python consumer, by path (named file) and
//!   by fd (memfd over SCM_RIGHTS, received with the Python `recv`);
//! - a Python producer (`describe` of numpy memmap views, joblib's failure cases) and a Rust
//!   consumer, then a Rust sub-view described again and opened by Python;
//! - Python segments (`stridemap.share`, memfd and named file) opened by Rust;
//! - the Rust sweep (`stridemap gc`) and the Python sweep (`stridemap.sweep`) each remove the
//!   folder of a killed producer of the other language, and leave a live one alone;
//! - segment lifetime across the languages (SPEC.md §7): a Python reader's lock keeps a
//!   released segment pending; once Python unmaps or exits, the pool deletes or recycles it;
//!   a stale descriptor gets O10 in Python;
//! - the README's Python example, run verbatim against a Rust producer.
//!
//! The tests need the Python reader's venv: `STRIDEMAP_PYTHON` names its python (relative
//! paths are taken from the workspace root), else the workspace's `.venv` (which `bash
//! scripts/test.sh` makes before it runs the tests). Without either they fail, saying so;
//! they never skip.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stridemap::{ByteView, OpenOptions};
use stridemap_core::{DType, Layout, Order, Slice, ValidDescriptor};
use stridemap_shm::{Pool, PoolConfig, SegmentKind, SharedArray};
use stridemap_tests::child::{hex, unhex};
use stridemap_tests::python::{python, workspace};

/// A running Python script: commands go to its stdin, JSON lines come from its stdout.
struct Py {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    what: String,
}

impl Py {
    fn spawn(script: &Path, args: &[&Path]) -> Py {
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        Py {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().expect("piped stdout")),
            child,
            what: script.display().to_string(),
        }
    }

    fn script(name: &str, args: &[&Path]) -> Py {
        Py::spawn(&workspace().join("tests/python").join(name), args)
    }

    /// The next line of output, raw.
    fn raw_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("reading python's stdout");
        if line.is_empty() {
            let status = self.child.wait().expect("wait for python");
            panic!("{} ended ({status}) without the expected output", self.what);
        }
        line.trim_end().to_string()
    }

    /// The next JSON line.
    fn json(&mut self) -> Value {
        let line = self.raw_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("writing to python");
        stdin.flush().expect("flushing to python");
    }

    /// Closes stdin (the scripts exit at EOF) and waits for a clean exit.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for python");
        assert!(status.success(), "{} failed: {status}", self.what);
    }
}

/// A folder in /dev/shm for one test: the pool's temp folder, the root Python allows, and
/// the socket Python connects to.
struct Harness {
    _dir: tempfile::TempDir,
    root: PathBuf,
    sock: PathBuf,
    listener: UnixListener,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir_in("/dev/shm").expect("a folder in /dev/shm");
        let root = dir.path().canonicalize().unwrap();
        let sock = root.join("ctl.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        listener.set_nonblocking(true).unwrap();
        Harness {
            _dir: dir,
            root,
            sock,
            listener,
        }
    }

    fn pool(&self, kind: SegmentKind, recycle: bool) -> Pool {
        let mut cfg = PoolConfig::default().temp_folder(&self.root).kind(kind);
        if !recycle {
            cfg = cfg.recycle_max_bytes(0);
        }
        Pool::with_config(cfg).unwrap()
    }

    /// Starts `consume.py` and accepts its connection.
    fn consumer(&self, hold: bool) -> (Py, UnixStream) {
        let mut args = vec![self.sock.as_path(), self.root.as_path()];
        if hold {
            args.push(Path::new("--hold"));
        }
        let mut py = Py::script("consume.py", &args);
        let stream = self.accept(&mut py);
        (py, stream)
    }

    /// The connection of `py`, which must come within 60 s.
    fn accept(&self, py: &mut Py) -> UnixStream {
        let start = Instant::now();
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    return s;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(status) = py.child.try_wait().unwrap() {
                        panic!("{} exited ({status}) before connecting", py.what);
                    }
                    assert!(start.elapsed() < Duration::from_secs(60), "no connection");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// The segment files of the pools below the root.
    fn segment_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.root).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(
                    std::fs::read_dir(e.path())
                        .unwrap()
                        .flatten()
                        .map(|f| f.path()),
                );
            }
        }
        out
    }
}

/// A frozen 1000×3 f64 array whose element (i, j) is i * 3 + j.
fn matrix(pool: &Pool) -> SharedArray<f64> {
    let mut a = pool.alloc::<f64>(&[1000, 3], Order::C).unwrap();
    let n = a.layout().len() as usize;
    let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
    a.copy_from_slice(&values).unwrap();
    a.freeze().unwrap()
}

/// The same matrix, written once into a segment by `Pool::publish`: not frozen, so its
/// segment is recycled once nobody maps it (a frozen memfd never is).
fn published_matrix(pool: &Pool) -> SharedArray {
    let data: Vec<f64> = (0..3000).map(f64::from).collect();
    let layout = Layout::contiguous(8, &[1000, 3], Order::C).unwrap();
    let view = ByteView::new(
        bytemuck::cast_slice(&data),
        layout,
        DType::parse("<f8").unwrap(),
    );
    pool.publish(&view.unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")))
        .collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_i64().unwrap_or_else(|| panic!("not an integer: {x}")))
        .collect()
}

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

/// How a consumer gets segments of `kind`: "path" (named files) or "fd" (memfds).
fn source_of(kind: SegmentKind) -> &'static str {
    match kind {
        SegmentKind::Memfd => "fd",
        _ => "path",
    }
}

/// Checks what consume.py reported for the whole matrix.
fn check_mapped_matrix(got: &Value, source: &str) {
    assert_eq!(got["event"], "mapped", "{got}");
    assert_eq!(got["source"], source);
    assert_eq!(got["dtype"], "<f8");
    assert_eq!(ints(&got["shape"]), [1000, 3]);
    assert_eq!(ints(&got["strides"]), [24, 8]);
    assert_eq!(got["writeable"], false);
    assert_eq!(got["mapped"], "mmap", "a view of the mapping, not a copy");
    let want: Vec<f64> = (0..3000).map(f64::from).collect();
    assert_eq!(floats(&got["values"]), want);
}

#[test]
fn rust_producer_python_consumer_by_path_and_by_fd() {
    for kind in [SegmentKind::File, SegmentKind::Memfd] {
        let h = Harness::new();
        let pool = h.pool(kind, true);
        let a = matrix(&pool);
        let (mut py, stream) = h.consumer(false);
        a.send(&stream).unwrap();
        let got = py.json();
        check_mapped_matrix(&got, source_of(kind));
        assert_eq!(got["generation"], 1);
        py.finish();
    }
}

#[test]
fn rust_sub_view_of_a_memfd_segment_to_python() {
    // A reversed column of the matrix (negative stride, offset inside the buffer) of a memfd
    // segment, sent with a separate open file description of its own (SPEC.md §7.4).
    let h = Harness::new();
    let pool = h.pool(SegmentKind::Memfd, true);
    let a = matrix(&pool);
    let layout = a
        .descriptor()
        .layout()
        .slice_axis(0, Slice::new(Some(900), Some(10), -7))
        .unwrap()
        .index_axis(1, 2)
        .unwrap();
    let desc = a.descriptor().to_builder().layout(&layout).build().unwrap();
    let (mut py, stream) = h.consumer(false);
    let fd = a.fd_for_peer().unwrap();
    stridemap::socket::send(&stream, &desc, Some(fd.as_fd())).unwrap();
    drop(fd);
    let got = py.json();
    assert_eq!(got["event"], "mapped", "{got}");
    assert_eq!(ints(&got["strides"]), [-7 * 24]);
    let want: Vec<f64> = (0..)
        .map(|k| 900 - 7 * k)
        .take_while(|&i| i > 10)
        .map(|i| f64::from(i * 3 + 2))
        .collect();
    assert_eq!(floats(&got["values"]), want);
    py.finish();
}

/// A Python-made descriptor of one of joblib's failure cases, how Rust checks it, and the
/// further sub-view Rust describes back.
struct Case {
    name: &'static str,
    /// Expected shape and values (C order) of the Python view.
    shape: Vec<u64>,
    values: Vec<f64>,
    /// A sub-view of it, as slices per axis, and its expected shape and values.
    sub: Vec<Slice>,
    sub_shape: Vec<u64>,
    sub_values: Vec<f64>,
}

fn joblib_cases() -> Vec<Case> {
    let f = |v: Vec<i64>| v.into_iter().map(|x| x as f64).collect::<Vec<_>>();
    // mat[i, j] = 10 i + j, 6×4; its transpose t[j, i].
    let t = |js: &[i64], is: &[i64]| {
        let mut out = Vec::new();
        for &j in js {
            for &i in is {
                out.push((10 * i + j) as f64);
            }
        }
        out
    };
    vec![
        Case {
            name: "rev",
            shape: vec![1000],
            values: f((0..1000).rev().collect()),
            // m[::-1][10:900:7] = 989, 982, …
            sub: vec![Slice::new(Some(10), Some(900), 7)],
            sub_shape: vec![128],
            sub_values: f((0..128).map(|k| 989 - 7 * k).collect()),
        },
        Case {
            name: "rev3",
            shape: vec![334],
            values: f((0..1000).rev().step_by(3).collect()),
            // m[::-3][::-1] = 0, 3, …, 999
            sub: vec![Slice::REVERSED],
            sub_shape: vec![334],
            sub_values: f((0..334).map(|k| 3 * k).collect()),
        },
        Case {
            name: "slice",
            shape: vec![10],
            values: f((491..=500).rev().collect()),
            // m[500:490:-1][::-2] = 491, 493, …, 499
            sub: vec![Slice::step(-2)],
            sub_shape: vec![5],
            sub_values: f(vec![491, 493, 495, 497, 499]),
        },
        Case {
            name: "transpose",
            shape: vec![4, 6],
            values: t(&[0, 1, 2, 3], &[0, 1, 2, 3, 4, 5]),
            // mat.T[::-1, 4:0:-2]
            sub: vec![Slice::REVERSED, Slice::new(Some(4), Some(0), -2)],
            sub_shape: vec![4, 2],
            sub_values: t(&[3, 2, 1, 0], &[4, 2]),
        },
    ]
}

/// The elements of `m`'s view as f64 (the vector is `<f8`, the matrix `<i4`), and a sub-view
/// of it described again.
fn read_and_describe_sub(m: &stridemap::Mapping, sub: &[Slice]) -> (Vec<f64>, ValidDescriptor) {
    if m.descriptor().dtype().to_string() == "<f8" {
        let v = m.volatile_view::<f64>().unwrap();
        let values = v.to_vec();
        (values, v.slice(sub).unwrap().describe().unwrap())
    } else {
        let v = m.volatile_view::<i32>().unwrap();
        let values = v.to_vec().into_iter().map(f64::from).collect();
        (values, v.slice(sub).unwrap().describe().unwrap())
    }
}

#[test]
fn joblib_failure_cases_round_trip_python_rust_python() {
    let h = Harness::new();
    let mut py = Py::script("produce.py", &[h.root.as_path()]);
    let described = py.json();
    assert_eq!(described["event"], "described", "{described}");
    let opts = OpenOptions::new().allow_root(&h.root);
    for case in joblib_cases() {
        let c = &described["cases"][case.name];
        // Python's own view of the case, as numpy sees it.
        assert_eq!(floats(&c["values"]), case.values, "{}", case.name);
        let desc = stridemap_core::decode(&unhex(c["record"].as_str().unwrap())).unwrap();
        assert_eq!(desc.generation(), 0);
        assert_eq!(desc.shape(), case.shape, "{}", case.name);
        let py_strides = ints(&c["strides"]);
        assert_eq!(desc.strides(), py_strides, "{}", case.name);
        // Rust opens the Python descriptor: the same elements, where joblib gets garbage.
        let m = opts.open(&desc).unwrap();
        let (values, sub) = read_and_describe_sub(&m, &case.sub);
        assert_eq!(
            values, case.values,
            "{}: Rust reading Python's descriptor",
            case.name
        );
        // Rust describes a further sub-view; Python opens it.
        py.send(&format!("{} {}", case.name, hex(&sub.to_bytes())));
        let got = py.json();
        assert_eq!(got["event"], "opened", "{}: {got}", case.name);
        assert_eq!(got["name"], case.name);
        let shape: Vec<u64> = ints(&got["shape"]).iter().map(|&n| n as u64).collect();
        assert_eq!(shape, case.sub_shape, "{}", case.name);
        assert_eq!(ints(&got["strides"]), sub.strides(), "{}", case.name);
        assert_eq!(
            floats(&got["values"]),
            case.sub_values,
            "{}: Python reading Rust's descriptor",
            case.name
        );
    }
    // What joblib gets wrong, spelled out: m[::-1] is element 999 first with stride -8.
    let rev = stridemap_core::decode(&unhex(
        described["cases"]["rev"]["record"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!((rev.offset(), rev.strides()), (999 * 8, &[-8i64][..]));
    py.finish();
}

/// The values (C order) of a `<f8` or `<i4` mapping, as f64.
fn values_of(m: &stridemap::Mapping) -> Vec<f64> {
    if m.descriptor().dtype().to_string() == "<f8" {
        m.volatile_view::<f64>().unwrap().to_vec()
    } else {
        let v = m.volatile_view::<i32>().unwrap().to_vec();
        v.into_iter().map(f64::from).collect()
    }
}

#[test]
fn python_share_opened_by_rust_by_fd_and_by_path() {
    // Python as a segment producer (`stridemap.share`): sealed memfds passed with a new fd per
    // receiver, and named segments in its pool folder, each with a SPEC.md §8 header that Rust
    // checks (O10) under its shared lock.
    let h = Harness::new();
    let mut py = Py::script("share.py", &[h.sock.as_path(), h.root.as_path()]);
    let shared = py.json();
    assert_eq!(shared["event"], "shared", "{shared}");
    let folder = PathBuf::from(shared["folder"].as_str().unwrap());
    assert!(folder.starts_with(&h.root) && folder.is_dir(), "{folder:?}");
    let stream = h.accept(&mut py);
    let opts = OpenOptions::new().allow_root(&folder);
    let mut held = Vec::new();
    for c in shared["cases"].as_array().unwrap() {
        let stridemap::socket::Incoming {
            descriptor: desc,
            fd,
        } = stridemap::socket::recv(&stream).unwrap();
        let what = format!("{} ({})", c["name"], c["kind"]);
        assert_eq!(desc.generation(), 1, "{what}");
        assert!(desc.segment_id().is_some(), "{what}");
        assert_eq!(
            ints(&c["shape"]),
            desc.shape().iter().map(|&n| n as i64).collect::<Vec<_>>()
        );
        assert_eq!(ints(&c["strides"]), desc.strides(), "{what}: strides kept");
        let m = match (c["kind"].as_str().unwrap(), fd) {
            ("memfd", Some(fd)) => opts.open((&desc, fd)).unwrap(),
            ("file", None) => opts.open(&desc).unwrap(),
            (kind, fd) => panic!("{what}: a {kind} segment with fd {fd:?}"),
        };
        let want = floats(&c["values"]);
        assert_eq!(values_of(&m), want, "{what}: Rust reading Python's segment");
        // Python's share() seals its memfds F_SEAL_WRITE (no writable map is left), so Rust
        // lends references to them; a named file never backs one (root ignores mode 0400).
        let kind = c["kind"].as_str().unwrap();
        assert_eq!(m.is_frozen(), kind == "memfd", "{what}: frozen");
        if kind == "memfd" && m.descriptor().dtype().to_string() == "<f8" {
            assert_eq!(
                m.view::<f64>().unwrap().to_vec(),
                want,
                "{what}: as a slice"
            );
        }
        held.push((what, m, want));
    }
    // Python exits normally: its pool folder goes; Rust's mappings keep reading (SPEC.md §7).
    py.finish();
    assert!(
        !folder.exists(),
        "the Python producer left {folder:?} behind"
    );
    for (what, m, want) in &held {
        assert_eq!(&values_of(m), want, "{what} after the producer exited");
    }
}

/// Not a test of its own: the entry point of the Rust producer the sweep test kills (see
/// `stridemap_tests::child`).
#[test]
fn child_process_entry() {
    let Some(role) = stridemap_tests::child::role() else {
        return;
    };
    assert_eq!(role, "producer");
    let pool = Pool::with_config(
        PoolConfig::default()
            .temp_folder(stridemap_tests::child::arg("ROOT"))
            .kind(SegmentKind::File)
            .sweep_on_start(false),
    )
    .unwrap();
    let held = [matrix(&pool), matrix(&pool)];
    println!("folder {}", pool.folders()[0].display());
    std::thread::sleep(Duration::from_secs(120)); // until killed, segments outstanding
    drop(held);
}

/// The Python sweep's report of `root`.
fn python_sweep(root: &Path) -> Value {
    let mut py = Py::script("sweep.py", &[root]);
    let report = py.json();
    py.finish();
    report
}

#[test]
fn rust_and_python_sweeps_clean_up_each_others_orphans() {
    let h = Harness::new();
    let root = std::slice::from_ref(&h.root);
    // A Python producer (named segments in its pool folder), then killed with SIGKILL: the
    // Rust sweep (what `stridemap gc` runs) leaves it while it lives and removes it after.
    let child = workspace().join("python/tests/producer_child.py");
    let mut py = Py::spawn(&child, &[h.root.as_path(), Path::new("sleep")]);
    let info = py.json();
    let py_folder = PathBuf::from(info["folder"].as_str().unwrap());
    assert!(py_folder.starts_with(&h.root) && py_folder.is_dir());
    let report = stridemap_shm::sweep(root, false).unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    assert!(
        py_folder.is_dir(),
        "the Rust sweep removed a live Python producer's folder"
    );
    py.child.kill().unwrap();
    py.child.wait().unwrap();
    let report = stridemap_shm::sweep(root, false).unwrap();
    assert_eq!(
        report.removed,
        std::slice::from_ref(&py_folder),
        "{report:?}"
    );
    assert!(!py_folder.exists());

    // A Rust producer with outstanding named segments, then killed: the Python sweep leaves
    // it while it lives and removes it after.
    let mut rust = stridemap_tests::child::spawn(
        "child_process_entry",
        "producer",
        &[("ROOT", h.root.display().to_string())],
    );
    let out = BufReader::new(rust.stdout.take().unwrap());
    let line = out
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("folder "))
        .expect("the Rust producer names its folder");
    let rust_folder = PathBuf::from(line.trim().strip_prefix("folder ").unwrap());
    assert_eq!(std::fs::read_dir(&rust_folder).unwrap().count(), 2);
    let report = python_sweep(&h.root);
    assert_eq!(report["removed"], serde_json::json!([]), "{report}");
    assert!(
        rust_folder.is_dir(),
        "the Python sweep removed a live Rust pool's folder"
    );
    rust.kill().unwrap();
    rust.wait().unwrap();
    let report = python_sweep(&h.root);
    let want = rust_folder.display().to_string();
    assert_eq!(report["removed"], serde_json::json!([want]), "{report}");
    assert!(!rust_folder.exists());
}

#[test]
fn a_python_reader_keeps_a_released_segment_until_it_unmaps() {
    for kind in [SegmentKind::File, SegmentKind::Memfd] {
        let h = Harness::new();
        let pool = h.pool(kind, false); // no recycling: a segment nobody maps is deleted
        let a = matrix(&pool);
        let (mut py, stream) = h.consumer(true);
        a.send(&stream).unwrap();
        check_mapped_matrix(&py.json(), source_of(kind));
        let files = h.segment_files();
        assert_eq!(
            files.len(),
            usize::from(kind == SegmentKind::File),
            "{kind:?}"
        );
        // The producer is done; Python's lock keeps the segment (SPEC.md §7).
        drop(a);
        std::thread::sleep(Duration::from_millis(100));
        pool.collect();
        assert_eq!(
            (pool.stats().free, pool.stats().pending),
            (0, 1),
            "{kind:?}: released but still mapped"
        );
        assert!(
            files.iter().all(|f| f.exists()),
            "deleted under a Python reader"
        );
        py.send("read");
        let again = py.json();
        assert_eq!(again["event"], "values");
        assert_eq!(floats(&again["values"]).iter().sum::<f64>(), 4_498_500.0);
        // Python drops the array (the process lives on): the pool deletes the segment.
        py.send("unmap");
        assert_eq!(py.json()["event"], "unmapped");
        wait_until("the pool deletes the segment", || {
            (pool.stats().free, pool.stats().pending) == (0, 0)
        });
        assert!(
            files.iter().all(|f| !f.exists()),
            "{kind:?}: file left behind"
        );
        py.finish();
    }
}

#[test]
fn a_segment_recycled_after_python_exits_refuses_the_stale_descriptor() {
    for kind in [SegmentKind::File, SegmentKind::Memfd] {
        let h = Harness::new();
        let pool = h.pool(kind, true);
        let a = published_matrix(&pool);
        let old = a.descriptor().clone();
        let (mut py, stream) = h.consumer(true);
        a.send(&stream).unwrap();
        assert_eq!(py.json()["event"], "mapped");
        drop(a);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            (pool.stats().free, pool.stats().pending),
            (0, 1),
            "{kind:?}: released but still mapped"
        );
        // Python exits without unmapping: the kernel drops its lock; the pool recycles.
        py.finish();
        wait_until("the pool recycles the segment", || {
            (pool.stats().free, pool.stats().pending) == (1, 0)
        });
        // The next array of the same size reuses it as generation 2.
        let b = published_matrix(&pool);
        assert_eq!(b.descriptor().segment_id(), old.segment_id());
        assert_eq!(b.descriptor().generation(), 2);
        // A Python reader given the old descriptor gets O10 ...
        let (mut py, stream) = h.consumer(false);
        let fd = b.fd_for_peer().unwrap();
        let fd = (kind == SegmentKind::Memfd).then_some(fd.as_fd());
        stridemap::socket::send(&stream, &old, fd).unwrap();
        let got = py.json();
        assert_eq!(got["event"], "error", "{kind:?}: {got}");
        assert_eq!(got["rule"], "O10");
        assert_eq!(got["error"], "StaleSegment");
        let message = got["message"].as_str().unwrap();
        assert!(message.contains("generation 2"), "{message}");
        py.finish();
        // ... and the new one maps the new contents.
        let (mut py, stream) = h.consumer(false);
        b.send(&stream).unwrap();
        let got = py.json();
        check_mapped_matrix(&got, source_of(kind));
        assert_eq!(got["generation"], 2);
        py.finish();
    }
}

#[test]
fn readme_example() {
    // The Python block that follows the marker in python/README.md, run verbatim.
    let readme = std::fs::read_to_string(workspace().join("python/README.md")).unwrap();
    let marker = "<!-- run verbatim by tests/tests/python_interop.rs (readme_example)";
    let after = &readme[readme.find(marker).expect("the README marks its example")..];
    let start = after
        .find("```python\n")
        .expect("a python block after the marker")
        + 10;
    let code = &after[start..start + after[start..].find("```").expect("the block's end")];
    assert!(code.lines().count() <= 10, "the example grew: {code}");
    let h = Harness::new();
    let script = h.root.join("readme_example.py");
    std::fs::write(&script, code).unwrap();
    let pool = h.pool(SegmentKind::Memfd, true);
    let a = matrix(&pool);
    let mut py = Py::spawn(&script, &[h.sock.as_path()]);
    let stream = h.accept(&mut py);
    a.send(&stream).unwrap();
    assert_eq!(py.raw_line(), "float64 (1000, 3) 1499500.0");
    py.finish();
}
