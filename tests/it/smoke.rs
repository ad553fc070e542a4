//! The node answers its health check with its id.
use crate::common;

#[tokio::test]
async fn healthz_names_the_node() {
    let server = common::TestServer::start(|_| {});
    let response = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-nimbus-node"], "test-node");
}

/// A node started with a low soft descriptor limit (1,024 is a common default) raises it to the
/// hard limit, so that it can hold more than a thousand connections without the operator
/// knowing about `ulimit -n`.
#[test]
fn the_binary_raises_its_descriptor_limit_to_the_hard_limit() {
    let open_files = |limits: &str| -> Option<(String, String)> {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut fields = line["Max open files".len()..].split_whitespace();
        Some((fields.next()?.to_string(), fields.next()?.to_string()))
    };
    let own = std::fs::read_to_string("/proc/self/limits").unwrap();
    let (_, hard) = open_files(&own).expect("this process's limits");
    // Otherwise a node that raised nothing would pass.
    assert!(
        hard == "unlimited" || hard.parse::<u64>().is_ok_and(|n| n > 512),
        "the hard limit ({hard}) must be above the 512 the node starts with"
    );
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 512 && exec {} --bind 127.0.0.1:0 --node-id limits",
            env!("CARGO_BIN_EXE_nimbus")
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nimbus starts");
    let limits = format!("/proc/{}/limits", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = None;
    while std::time::Instant::now() < deadline {
        seen = std::fs::read_to_string(&limits)
            .ok()
            .and_then(|l| open_files(&l));
        if seen.as_ref().is_some_and(|(soft, _)| *soft == hard) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        seen,
        Some((hard.clone(), hard)),
        "nimbus's soft and hard limits"
    );
}
