//! The deployment files are valid and describe the topology the tests run: docker-compose.yml
//! (checked with `docker-compose config`, which needs no Docker engine), the HAProxy config
//! (`haproxy -c`), and the Kubernetes manifests (`kubernetes-validate --strict`, offline).
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(program: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let output = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} not runnable ({e}); scripts/install-test-deps.sh installs it")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{text}"
    );
    text
}

/// The environment the HAProxy config reads its addresses from, as each topology sets it.
const LB_VARIABLES: [&str; 5] = [
    "LB_BIND",
    "HAPROXY_STATS",
    "NIMBUS_NODE1",
    "NIMBUS_NODE2",
    "NIMBUS_NODE3",
];

#[test]
fn the_compose_file_runs_redis_three_nodes_and_the_shared_balancer_config() {
    let config = run(
        "docker-compose",
        &["-f", "docker-compose.yml", "config"],
        &[],
    );
    for node in ["nimbus1", "nimbus2", "nimbus3"] {
        assert!(
            config.contains(&format!("NIMBUS_NODE_ID: {node}")),
            "{node} missing:\n{config}"
        );
    }
    assert_eq!(
        config
            .matches("NIMBUS_REDIS_URL: redis://redis:6379/")
            .count(),
        3,
        "every node uses the Redis bridge"
    );
    // The balancer mounts the very file scripts/cluster.sh runs.
    let mount = format!("{ROOT}/deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro");
    assert!(config.contains(&mount), "no {mount} in:\n{config}");
    let script = std::fs::read_to_string(format!("{ROOT}/scripts/cluster.sh")).unwrap();
    assert!(script.contains("haproxy -f deploy/haproxy.cfg"));
    for variable in LB_VARIABLES {
        assert!(
            config.contains(&format!("{variable}: ")),
            "compose does not set {variable}"
        );
        assert!(
            script.contains(&format!("{variable}=")),
            "cluster.sh does not set {variable}"
        );
    }
    assert!(
        config.contains("published: 8080"),
        "the balancer is on localhost:8080"
    );
}

#[test]
fn the_balancer_config_is_valid_round_robin_without_stickiness() {
    let envs: Vec<(&str, &str)> = vec![
        ("LB_BIND", "127.0.0.1:18000"),
        ("HAPROXY_STATS", "127.0.0.1:18010"),
        ("NIMBUS_NODE1", "127.0.0.1:1"),
        ("NIMBUS_NODE2", "127.0.0.1:2"),
        ("NIMBUS_NODE3", "127.0.0.1:3"),
    ];
    run("haproxy", &["-c", "-f", "deploy/haproxy.cfg"], &envs);
    let config = std::fs::read_to_string(format!("{ROOT}/deploy/haproxy.cfg")).unwrap();
    let directives: Vec<&str> = config
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(directives.contains(&"balance roundrobin"));
    for sticky in ["cookie", "stick", "balance source", "hash-type"] {
        assert!(
            !directives.iter().any(|l| l.starts_with(sticky)),
            "session affinity ({sticky}) in the balancer config"
        );
    }
}

#[test]
fn the_kubernetes_manifests_validate() {
    let out = run(
        "kubernetes-validate",
        &[
            "--strict",
            "deploy/kubernetes/nimbus.yaml",
            "deploy/kubernetes/redis.yaml",
        ],
        &[],
    );
    assert_eq!(out.matches("passed").count(), 5, "{out}");
    let manifest =
        std::fs::read_to_string(format!("{ROOT}/deploy/kubernetes/nimbus.yaml")).unwrap();
    assert!(manifest.contains("path: /readyz") && manifest.contains("path: /healthz"));
    assert!(manifest.contains("sessionAffinity: None"));
}
