//! The control surface of a running agent: refused without the cluster's secret; with it, a
//! fabric listener on one agent and a ping from another, over libfabric's tcp provider.

mod support;

use std::time::Duration;

use support::{Node, kill_and_wait, request};

const SIGTERM: i32 = 15;

/// Stops an agent (and, through its process group, the children it started).
fn stop(agent: &mut std::process::Child) {
    kill_and_wait(agent, SIGTERM, Duration::from_secs(10));
}

const SECRET: &str = "5f0c1a8e2b7d4c6e9a3f1b0d8c7e6a5b4f3e2d1c0b9a8f7e6d5c4b3a29181706";

/// A node whose agent has `secret` as its control secret.
fn node(secret: Option<&str>) -> Node {
    // Ray is not started: the control surface does not depend on the bootstrap.
    let node = Node::new("[commands]\nstart = [\"true\"]\n");
    if let Some(secret) = secret {
        let text = std::fs::read_to_string(node.config()).expect("config");
        node.write_config(&text.replacen(
            "[agent]\n",
            &format!("[agent]\ncontrol_secret = \"{secret}\"\n"),
            1,
        ));
    }
    node
}

/// Waits until the agent answers on its port.
fn serving(node: &Node) {
    node.wait_status(Duration::from_secs(20), |_| true);
}

fn post(node: &Node, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    request(
        node.address,
        format!(
            "POST {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .expect("the agent answers")
}

const LISTEN: &str = r#"{"provider":"tcp","source":"127.0.0.1","serve_for_secs":60,"sessions":1}"#;

#[test]
fn a_wrong_or_missing_secret_is_refused_and_logged() {
    let node = node(Some(SECRET));
    let mut agent = node.spawn();
    serving(&node);
    let path = "/v1/control/pingpong/listen";
    let (code, body) = post(&node, path, None, LISTEN);
    assert_eq!(code, 401, "{body}");
    let wrong = format!("Bearer {}", SECRET.replace('5', "6"));
    let (code, body) = post(&node, path, Some(&wrong), LISTEN);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("wrong control secret"), "{body}");
    // The status endpoints stay open and read-only.
    let (code, _) = post(&node, "/v1/status", Some(&format!("Bearer {SECRET}")), "{}");
    assert_eq!(code, 405);
    stop(&mut agent);
    let log = node.log();
    assert!(log.contains("control request refused"), "{log}");
}

#[test]
fn an_agent_without_a_secret_refuses_even_the_right_looking_one() {
    let node = node(None);
    let mut agent = node.spawn();
    serving(&node);
    let (code, body) = post(
        &node,
        "/v1/control/pingpong/listen",
        Some(&format!("Bearer {SECRET}")),
        LISTEN,
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("disabled"), "{body}");
    stop(&mut agent);
}

#[test]
fn one_agent_listens_and_another_pings_it_over_tcp() {
    let (a, b) = (node(Some(SECRET)), node(Some(SECRET)));
    let (mut agent_a, mut agent_b) = (a.spawn(), b.spawn());
    serving(&a);
    serving(&b);
    let auth = format!("Bearer {SECRET}");
    let (code, body) = post(&a, "/v1/control/pingpong/listen", Some(&auth), LISTEN);
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("json");
    let address = ready["address"].as_str().expect("an address");
    let ping = format!(
        r#"{{"provider":"tcp","source":"127.0.0.1","address":"{address}","sizes":[64,65536],"iterations":20}}"#
    );
    let (code, body) = post(&b, "/v1/control/pingpong/ping", Some(&auth), &ping);
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["outcome"], "passed", "{body}");
    let sizes: Vec<u64> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["size"].as_u64().expect("size"))
        .collect();
    assert_eq!(sizes, [64, 65536]);
    stop(&mut agent_a);
    stop(&mut agent_b);
}
