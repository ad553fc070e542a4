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

/// A base port with the eleven ports the cluster uses free (and, for a Redis Cluster, the bus
/// ports 10,000 above its three).
fn free_base_port() -> u16 {
    for _ in 0..200 {
        let base = 20_000 + (rand_u16() % 3000) * 10;
        let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        if (0..=10).all(|i| free(base + i)) && (0..3).all(|i| free(base + 10_000 + i)) {
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

    /// The cluster's Redis, for nodes a test starts itself.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port + 9)
    }

    /// Run `redis-cli` against the cluster's Redis: its output.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        redis_cli(self.port + 9, args)
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

/// A process started by a test, killed when dropped.
pub struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One `redis-server` on loopback, started by the test.
pub struct Redis {
    pub port: u16,
    _server: Process,
}

impl Redis {
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let server = Process(child);
        wait_until("redis-server up", || {
            redis_cli(port, &["ping"]).contains("PONG")
        });
        Redis {
            port,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Run `redis-cli` against this server: its output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

/// A three-master Redis Cluster on loopback (no replicas), started by the test.
pub struct RedisCluster {
    pub ports: [u16; 3],
    _servers: Vec<Process>,
    _turn: MutexGuard<'static, ()>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let base = free_base_port();
        let ports = [base, base + 1, base + 2];
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("redis-cluster-{base}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let servers = ports
            .iter()
            .map(|port| {
                let child = Command::new("redis-server")
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .arg("--cluster-config-file")
                    .arg(dir.join(format!("nodes-{port}.conf")))
                    .arg("--logfile")
                    .arg(dir.join(format!("redis-{port}.log")))
                    .spawn()
                    .expect("redis-server runs");
                Process(child)
            })
            .collect();
        for port in ports {
            wait_until("redis-server up", || {
                redis_cli(port, &["ping"]).contains("PONG")
            });
        }
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("redis-cli --cluster create");
        assert!(status.success(), "cluster create failed");
        for port in ports {
            wait_until("cluster_state:ok", || {
                redis_cli(port, &["cluster", "info"]).contains("cluster_state:ok")
            });
        }
        RedisCluster {
            ports,
            _servers: servers,
            _turn: turn,
        }
    }

    /// The `--redis-url` value naming every master.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The sharded channels each master serves.
    pub fn shard_channels(&self) -> Vec<Vec<String>> {
        self.ports
            .iter()
            .map(|&p| {
                redis_cli(p, &["pubsub", "shardchannels"])
                    .lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .collect()
    }
}

/// A `nimbus` process on a free loopback port with `args`; waits until it is ready.
pub fn start_nimbus(node_id: &str, args: &[&str]) -> (Process, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .args(["--bind", &format!("127.0.0.1:{port}"), "--node-id", node_id])
        .args(args)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("nimbus runs");
    let base = format!("http://127.0.0.1:{port}");
    let ready = format!("127.0.0.1:{port}");
    wait_until("nimbus ready", || {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(&ready) else {
            return false;
        };
        let _ = stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
    });
    (Process(child), base)
}
