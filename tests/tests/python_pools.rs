//! A Rust pool's memfd opened inside a Python process pool's worker (`stridemap.pools`), and
//! handed on, still without a copy, to the Python parent: `tests/python/pool_consumer.py`.
//!
//! Needs the Python venv like `python_interop.rs`: `STRIDEMAP_PYTHON`, else the workspace's
//! `.venv` (`bash scripts/test.sh` makes it first). Without it the test fails, saying so.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stridemap_core::Order;
use stridemap_shm::{Pool, PoolConfig, SegmentKind};
use stridemap_tests::python::{python, workspace};

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")))
        .collect()
}

#[test]
fn a_rust_memfd_in_a_python_pool_worker_and_back_to_its_parent() {
    let dir = tempfile::tempdir_in("/dev/shm").expect("a folder in /dev/shm");
    let root = dir.path().canonicalize().unwrap();
    let pool = Pool::with_config(
        PoolConfig::default()
            .temp_folder(&root)
            .kind(SegmentKind::Memfd),
    )
    .unwrap();
    let mut a = pool.alloc::<f64>(&[1000, 3], Order::C).unwrap();
    let data: Vec<f64> = (0..3000).map(f64::from).collect();
    a.copy_from_slice(&data).unwrap();
    let a = a.freeze().unwrap();

    let sock = root.join("pool.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut child = Command::new(python())
        .arg(workspace().join("tests/python/pool_consumer.py"))
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting pool_consumer.py");
    let start = Instant::now();
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("pool_consumer.py exited ({status}) before its worker connected");
                }
                assert!(start.elapsed() < Duration::from_secs(60), "no connection");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    a.send(&stream).unwrap();

    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "pool_consumer.py failed: {status}");
    let got: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));

    assert_ne!(
        got["worker"], got["parent"],
        "the worker is another process"
    );
    assert_eq!(numbers(&got["shape"]), [1000.0, 3.0]);
    assert_eq!(numbers(&got["strides"]), [-24.0, 8.0]);
    let want: Vec<f64> = (0..1000)
        .rev()
        .flat_map(|i| (0..3).map(move |j| f64::from(i * 3 + j)))
        .collect();
    assert_eq!(numbers(&got["values"]), want);
    for side in ["worker_mapping", "parent_mapping"] {
        let m = got[side].as_str().unwrap_or_default();
        assert!(
            m.contains("memfd:"),
            "{side}: the data lies in {m:?}, not the memfd"
        );
    }
}
