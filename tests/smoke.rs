//! The node answers its health check with its id.
mod common;

#[tokio::test]
async fn healthz_names_the_node() {
    let server = common::TestServer::start(|_| {});
    let response = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-nimbus-node"], "test-node");
}
