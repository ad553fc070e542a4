//! The local cluster of `scripts/cluster.sh` (Redis, three nodes, HAProxy with the load
//! balancer config docker-compose uses), started for a test and stopped when dropped.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// One cluster at a time: each is five processes on a two-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    _turn: MutexGuard<'static, ()>,
}

fn script(args: &[&str], dir: &PathBuf, extra_args: &str) {
    let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("NIMBUS_BIN", env!("CARGO_BIN_EXE_nimbus"))
        .env("NIMBUS_ARGS", extra_args)
        .env("RUST_LOG", "info,nimbus=debug")
        .status()
        .expect("run scripts/cluster.sh");
    assert!(status.success(), "scripts/cluster.sh {args:?} failed");
}

/// A base port with the eleven ports the cluster uses free.
fn free_base_port() -> u16 {
    for _ in 0..200 {
        let base = 20_000 + (rand_u16() % 4000) * 10;
        if (0..=10).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range for a cluster");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) as u16
}

impl Cluster {
    /// Start Redis, three nodes (with `extra_args` added to each) and the balancer.
    pub fn up(extra_args: &str) -> Cluster {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let port = free_base_port();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cluster-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        script(&["up", "--port", &port.to_string()], &dir, extra_args);
        Cluster {
            port,
            dir,
            _turn: turn,
        }
    }

    /// A URL on the balancer.
    pub fn lb(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.port)
    }

    /// A URL on node `n` (1..=3), bypassing the balancer.
    pub fn node(&self, n: u16, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.port + n)
    }

    pub fn kill_node(&self, n: u16) {
        script(&["kill-node", &n.to_string()], &self.dir, "");
    }

    /// SIGTERM node `n` (graceful shutdown) and wait for it to exit.
    pub fn stop_node(&self, n: u16) {
        script(&["stop-node", &n.to_string()], &self.dir, "");
    }

    pub fn start_node(&self, n: u16, extra_args: &str) {
        script(&["start-node", &n.to_string()], &self.dir, extra_args);
    }

    pub fn stop_redis(&self) {
        script(&["stop-redis"], &self.dir, "");
    }

    pub fn start_redis(&self) {
        script(&["start-redis"], &self.dir, "");
    }

    /// A node's log so far (for failure messages).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
            .args(["down", "--dir"])
            .arg(&self.dir)
            .status();
    }
}
