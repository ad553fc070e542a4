//! The deployment files are valid and describe the topology the tests run: docker-compose.yml
//! (checked with `docker-compose config`, which needs no Docker engine), the HAProxy config
//! (`haproxy -c`), the Kubernetes manifests (`kubernetes-validate --strict`, offline), and the
//! monitoring: Prometheus scraping every node of the compose file (`promtool check config`)
//! and a Grafana dashboard that queries only metrics a node serves.
use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

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

// === Monitoring: Prometheus and Grafana ===

/// A YAML file of the repository, as JSON. No YAML crate is among the dev-dependencies, so
/// PyYAML reads it: the Python that runs kubernetes-validate has it (a dependency of it).
fn yaml(path: &str) -> Value {
    const TO_JSON: &str =
        "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    let output = Command::new("python3")
        .args(["-c", TO_JSON, path])
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| panic!("python3 not runnable ({e})"));
    assert!(
        output.status.success(),
        "{path} is not YAML (or python3 lacks PyYAML; scripts/install-test-deps.sh installs \
         it with kubernetes-validate):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("PyYAML's JSON")
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"))
}

fn strings<'a>(value: &'a Value, what: &str) -> Vec<&'a str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what} is not a list: {value}"))
        .iter()
        .map(|v| text(v, what))
        .collect()
}

/// A service's volumes, `source` → `target` (the short syntax, `:ro` dropped).
fn mounts(service: &Value, name: &str) -> BTreeMap<String, String> {
    strings(&service["volumes"], &format!("{name}'s volumes"))
        .into_iter()
        .map(|volume| {
            let mut parts = volume.split(':');
            let source = parts.next().unwrap().to_string();
            let target = parts
                .next()
                .unwrap_or_else(|| panic!("{name}: volume {volume} has no target"));
            (source, target.to_string())
        })
        .collect()
}

/// The uid the provisioned Prometheus datasource has, after checking that it is the compose
/// file's Prometheus.
fn provisioned_prometheus_uid() -> String {
    let provisioning = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let sources = provisioning["datasources"]
        .as_array()
        .expect("a datasources list");
    let prometheus: Vec<&Value> = sources
        .iter()
        .filter(|s| s["type"] == "prometheus")
        .collect();
    assert_eq!(
        prometheus.len(),
        1,
        "one Prometheus datasource: {sources:?}"
    );
    let source = prometheus[0];
    assert_eq!(
        source["url"], "http://prometheus:9090",
        "the compose service"
    );
    assert_eq!(
        source["access"], "proxy",
        "the browser cannot reach prometheus:9090"
    );
    text(&source["uid"], "the datasource's uid").to_string()
}

#[test]
fn prometheus_scrapes_every_node_of_the_compose_file_and_grafana_is_provisioned() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().expect("services");

    // The nodes: every service with a node id, at the addresses the balancer reaches them on.
    let nodes: BTreeSet<&str> = services
        .iter()
        .filter(|(_, s)| s["environment"]["NIMBUS_NODE_ID"].is_string())
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(nodes.len(), 3, "three nodes: {nodes:?}");
    let lb = &services["lb"]["environment"];
    let addresses: BTreeSet<String> = (1..=3)
        .map(|n| text(&lb[format!("NIMBUS_NODE{n}")], "a node's address").to_string())
        .collect();
    let hosts: BTreeSet<&str> = addresses
        .iter()
        .map(|a| a.split(':').next().unwrap())
        .collect();
    assert_eq!(hosts, nodes, "the balancer's nodes are the compose file's");

    // Prometheus, with the config below where the image reads it.
    let prometheus = &services["prometheus"];
    assert!(
        text(&prometheus["image"], "prometheus's image").starts_with("prom/prometheus"),
        "{prometheus}"
    );
    assert!(strings(&prometheus["ports"], "prometheus's ports").contains(&"9090:9090"));
    assert_eq!(
        mounts(prometheus, "prometheus").get("./deploy/prometheus.yml"),
        Some(&"/etc/prometheus/prometheus.yml".to_string())
    );

    // Every node scraped at /metrics every 5 s, and nothing else (not the balancer).
    let config = yaml("deploy/prometheus.yml");
    let mut scraped = BTreeSet::new();
    for job in config["scrape_configs"].as_array().expect("scrape_configs") {
        let interval = job
            .get("scrape_interval")
            .unwrap_or(&config["global"]["scrape_interval"]);
        assert_eq!(interval, "5s", "job {}", job["job_name"]);
        assert_eq!(job["metrics_path"], "/metrics", "job {}", job["job_name"]);
        for group in job["static_configs"].as_array().expect("static_configs") {
            for target in strings(&group["targets"], "targets") {
                assert!(scraped.insert(target.to_string()), "{target} twice");
            }
        }
    }
    assert_eq!(scraped, addresses, "Prometheus scrapes each node");
    run(
        "promtool",
        &["check", "config", "deploy/prometheus.yml"],
        &[],
    );

    // Grafana: anonymous viewers, the datasource above, the dashboards of deploy/grafana/.
    let grafana = &services["grafana"];
    assert!(
        text(&grafana["image"], "grafana's image").starts_with("grafana/grafana"),
        "{grafana}"
    );
    assert!(strings(&grafana["ports"], "grafana's ports").contains(&"3000:3000"));
    let environment = &grafana["environment"];
    assert_eq!(environment["GF_AUTH_ANONYMOUS_ENABLED"], "true");
    assert_eq!(environment["GF_AUTH_ANONYMOUS_ORG_ROLE"], "Viewer");
    assert!(strings(&grafana["depends_on"], "grafana's depends_on").contains(&"prometheus"));
    let mounted = mounts(grafana, "grafana");
    for kind in ["datasources", "dashboards"] {
        assert_eq!(
            mounted.get(&format!("./deploy/grafana/provisioning/{kind}")),
            Some(&format!("/etc/grafana/provisioning/{kind}")),
            "grafana's provisioned {kind}"
        );
    }
    provisioned_prometheus_uid();
    let dashboards = mounted
        .get("./deploy/grafana/dashboards")
        .expect("deploy/grafana/dashboards mounted");
    let providers = yaml("deploy/grafana/provisioning/dashboards/nimbus.yml");
    let paths: Vec<&str> = providers["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .map(|p| text(&p["options"]["path"], "a provider's path"))
        .collect();
    assert_eq!(paths, [dashboards.as_str()], "the provider reads the mount");
    let home = text(
        &environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"],
        "the home dashboard",
    );
    let file = home
        .strip_prefix(&format!("{dashboards}/"))
        .expect("the home dashboard is a provisioned one");
    assert!(std::path::Path::new(&format!("{ROOT}/deploy/grafana/dashboards/{file}")).is_file());
}

/// Every `nimbus_*` name in `query`, in order.
fn metric_names(query: &str, names: &mut BTreeSet<String>) {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut rest = query;
    while let Some(at) = rest.find("nimbus_") {
        let starts_a_name = rest[..at].chars().next_back().is_none_or(|c| !is_name(c));
        let name: String = rest[at..].chars().take_while(|&c| is_name(c)).collect();
        if starts_a_name {
            names.insert(name.clone());
        }
        rest = &rest[at + name.len()..];
    }
}

/// The queries of a dashboard: each `expr` of a panel, each query of a variable.
fn queries<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", Value::String(query)) => out.push(query),
                    _ => queries(value, out),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// Every `datasource` of a dashboard that is not Grafana's own (annotations).
fn datasources<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                if key == "datasource" && value["type"] != "grafana" {
                    out.push(value);
                } else {
                    datasources(value, out);
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|v| datasources(v, out)),
        _ => {}
    }
}

/// The sample names a scrape of `page` (OpenMetrics or Prometheus text) can give: each sample
/// shown, and for each family its type's names (`_total` of a counter, `_bucket`, `_sum`,
/// `_count` of a histogram, ...), so that a labelled family with no child yet counts too.
fn served_names(page: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in page.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let mut fields = family.split_whitespace();
            let (name, kind) = (fields.next().unwrap(), fields.next().unwrap_or("unknown"));
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The PromQL of every query parses: `promtool check rules` on them as recording rules, with
/// the dashboard's variables given values.
fn check_promql(exprs: &[&str]) {
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$instance", ".*");
            serde_json::json!({ "record": format!("dashboard:query_{i}"), "expr": expr })
        })
        .collect();
    let file = format!("{}/dashboard-rules.yml", env!("CARGO_TARGET_TMPDIR"));
    let groups = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    // JSON is YAML.
    std::fs::write(&file, groups.to_string()).unwrap();
    run("promtool", &["check", "rules", &file], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_metrics_a_node_serves() {
    let path = format!("{ROOT}/deploy/grafana/dashboards/nimbus.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());

    // Every query goes to the provisioned Prometheus, by its uid.
    let uid = provisioned_prometheus_uid();
    let mut sources = Vec::new();
    datasources(&dashboard, &mut sources);
    assert!(!sources.is_empty());
    for source in sources {
        assert_eq!(source["type"], "prometheus", "{source}");
        assert_eq!(source["uid"], uid.as_str(), "{source}");
    }

    // Every panel queries something, and the queries are PromQL.
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(
            !targets.is_empty(),
            "panel {} queries nothing",
            panel["title"]
        );
        for target in targets {
            exprs.push(text(&target["expr"], "a target's expr"));
        }
    }
    check_promql(&exprs);
    let mut all = Vec::new();
    queries(&dashboard, &mut all);
    let mut wanted = BTreeSet::new();
    for query in &all {
        metric_names(query, &mut wanted);
    }
    assert!(wanted.len() > 10, "{wanted:?}");

    // A clustered node (so with its Redis round trips) that delivered a message, refused a
    // token and stopped a publisher over its rate: the labelled families show on the page only
    // once they have a child.
    let redis = common::cluster::Redis::start();
    let (server, _) = common::TestServer::start_clustered(
        &redis.url(),
        "metrics",
        |c| {
            c.jwt_hmac_secret = Some("a secret of the metrics test".into());
            c.allow_anonymous = true;
            c.session_ids = Some(nimbus::session::IdPolicy::Open);
            c.max_publishes_per_sec = 1;
        },
        |_| {},
    );
    let topic = "/metrics/probe";
    let (mut subscriber, _) = common::ws_open(&server, topic, "subscriber", true).await;
    common::ws_text(&mut subscriber).await; // the handshake
    common::publish_all(&server, topic, &["probe".to_string()]).await;
    assert_eq!(
        common::ws_text(&mut subscriber).await,
        common::frame("probe")
    );
    let client = reqwest::Client::new();
    let over_rate = common::post(&client, &server, topic, "publisher", "again").await;
    assert_eq!(over_rate, 429, "a limit hit");
    let url = common::topic_url(&server, topic, "long-polling", "0", true);
    let refused = client
        .get(format!("{url}&X-Atmosphere-Auth=not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "an auth failure");
    let page = reqwest::get(server.url("/metrics"))
        .await
        .expect("metrics reachable")
        .text()
        .await
        .unwrap();
    let served = served_names(&page);
    let missing: Vec<&String> = wanted.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {} name(s) the node does not serve: {missing:?}\n\
         served: {served:?}\n{page}",
        missing.len()
    );
}
