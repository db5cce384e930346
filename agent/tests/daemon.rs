//! The real agent binary as a daemon: serving, readiness, stopping, crashing and resuming.

mod support;

use std::time::Duration;

use support::{Node, get, kill, request, wait_exit};

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

#[test]
fn serves_status_and_turns_ready_when_every_step_is_done() {
    let node = Node::new(
        "[commands]\nsetup = [\"echo setup >> $MARKS/setup\", \"echo second >> $MARKS/setup\"]\n\
         start = [\"sleep 0.5; echo start >> $MARKS/start\"]\n",
    );
    let mut agent = node.spawn();
    let early = node.wait_status(Duration::from_secs(10), |_| true);
    assert_eq!(early["api"], 1);
    let (code, body) = node.wait_ready(Duration::from_secs(20));
    assert_eq!(code, 200, "not ready: {body}\n{}", node.log());
    let readiness: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(readiness["ready"], true);

    let (code, body) = get(node.address, "/v1/status").expect("status");
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(doc["state"], "ready");
    assert_eq!(doc["node"]["node_type"], "head_node");
    let steps = doc["steps"].as_array().expect("steps");
    let by_name = |name: &str| {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .expect("step present")
            .clone()
    };
    assert_eq!(by_name("grow-root")["state"], "skipped");
    assert_eq!(
        by_name("grow-root")["reason"],
        "turned off in configuration"
    );
    let start = by_name("start-ray");
    assert_eq!(start["state"], "succeeded");
    assert!(start["started_at_ms"].as_u64() <= start["finished_at_ms"].as_u64());
    assert_eq!(start["attempts"], 1);
    assert_eq!(node.marks("setup"), 2);
    assert_eq!(node.marks("start"), 1);
    assert!(
        node.path("root/var/lib/rayefa/logs/setup-commands.log")
            .exists()
    );

    let (code, metrics) = get(node.address, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("rayefa_node_ready 1"), "{metrics}");
    assert!(
        metrics.contains("rayefa_step_state{step=\"start-ray\",state=\"succeeded\"} 1"),
        "{metrics}"
    );

    let (code, _) = get(node.address, "/healthz").expect("healthz");
    assert_eq!(code, 200);

    let status = node.output(&["status"]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{table}");
    assert!(
        table.contains("start-ray") && table.contains("succeeded"),
        "{table}"
    );

    kill(&mut agent, SIGTERM);
    let exit = wait_exit(&mut agent, Duration::from_secs(10)).expect("exits on SIGTERM");
    assert_eq!(exit.code(), Some(0), "{}", node.log());
}

#[test]
fn the_server_is_read_only_and_bounded() {
    let node = Node::new("[commands]\nstart = [\"true\"]\n");
    let mut agent = node.spawn();
    node.wait_status(Duration::from_secs(10), |_| true);

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let raw = format!(
            "{method} /v1/status HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let (code, _) = request(node.address, raw.as_bytes()).expect("answer");
        assert_eq!(code, 405, "{method}");
    }
    let (code, _) = get(node.address, "/nothing-here").expect("answer");
    assert_eq!(code, 404);

    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    match request(node.address, huge.as_bytes()) {
        Ok((code, _)) => assert_eq!(code, 431, "oversized headers"),
        Err(err) => assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{err}"
        ),
    }

    // A client that never finishes its request head is cut off; others are still served.
    let slow = std::net::TcpStream::connect(node.address).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    std::io::Write::write_all(&mut &slow, b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
        .expect("partial head");
    let (code, _) = get(node.address, "/healthz").expect("served beside the slow client");
    assert_eq!(code, 200);
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut &slow, &mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the slow client was not cut off"
    );

    kill(&mut agent, SIGTERM);
    wait_exit(&mut agent, Duration::from_secs(10)).expect("exits");
}

#[test]
fn a_sigkilled_agent_resumes_without_rerunning_completed_steps() {
    let node = Node::new(
        "[commands]\nsetup = [\"echo run >> $MARKS/setup\"]\n\
         start = [\"echo begin >> $MARKS/start-begin; sleep 2; echo end >> $MARKS/start-end\"]\n",
    );
    let mut agent = node.spawn();
    node.wait_status(Duration::from_secs(10), |doc| {
        doc["steps"].as_array().is_some_and(|steps| {
            steps
                .iter()
                .any(|s| s["name"] == "start-ray" && s["state"] == "running")
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    kill(&mut agent, SIGKILL);
    wait_exit(&mut agent, Duration::from_secs(5)).expect("killed");
    assert_eq!(node.marks("setup"), 1);
    assert_eq!(node.marks("start-begin"), 1);

    let mut agent = node.spawn();
    let (code, body) = node.wait_ready(Duration::from_secs(20));
    assert_eq!(
        code,
        200,
        "not ready after the restart: {body}\n{}",
        node.log()
    );
    assert_eq!(node.marks("setup"), 1, "a completed step ran again");
    assert_eq!(
        node.marks("start-begin"),
        2,
        "the interrupted step was not re-run"
    );
    let (_, body) = get(node.address, "/v1/status").expect("status");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let start = doc["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == "start-ray"))
        .expect("start-ray");
    assert_eq!(start["attempts"], 2);
    let log = std::fs::read_to_string(node.path("root/var/lib/rayefa/logs/setup-commands.log"))
        .expect("log");
    assert_eq!(
        log.matches("=== setup-commands: attempt").count(),
        1,
        "{log}"
    );

    kill(&mut agent, SIGTERM);
    wait_exit(&mut agent, Duration::from_secs(10)).expect("exits");
}

#[test]
fn sigterm_stops_running_commands_and_keeps_the_journal() {
    let node = Node::new("[commands]\nstart = [\"echo $$ > $MARKS/pid; exec sleep 60\"]\n");
    let mut agent = node.spawn();
    node.wait_status(Duration::from_secs(10), |_| node.marks("pid") == 1);
    let pid: i32 = std::fs::read_to_string(node.path("marks/pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("number");
    kill(&mut agent, SIGTERM);
    let exit = wait_exit(&mut agent, Duration::from_secs(10)).expect("exits on SIGTERM");
    assert_eq!(exit.code(), Some(0));
    // SAFETY: signal 0 only asks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(!alive, "the step's command outlived the agent");
    let journal: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(node.path("root/var/lib/rayefa/journal.json")).expect("journal"),
    )
    .expect("JSON journal");
    let start = journal["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == "start-ray"))
        .expect("start-ray journalled");
    assert_eq!(
        start["state"], "running",
        "an interrupted step must be re-checked on restart"
    );

    let status = node.output(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(4), "{text}");
    assert!(text.contains("from its journal"), "{text}");
}

#[test]
fn a_failing_setup_command_fails_the_node_naming_the_command() {
    let node = Node::new(
        "[commands]\nsetup = [\"true\", \"echo oops >&2; exit 7\", \"echo never >> $MARKS/never\"]\n",
    );
    let mut agent = node.spawn();
    let doc = node.wait_status(Duration::from_secs(20), |doc| doc["state"] == "failed");
    assert_eq!(doc["step"], "setup-commands");
    let reason = doc["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exit 7") || reason.contains("exited 7"),
        "{reason}"
    );
    assert!(reason.contains("oops"), "{reason}");
    let start = doc["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == "start-ray"))
        .expect("start-ray");
    assert_eq!(start["state"], "blocked");
    assert_eq!(start["by"], "setup-commands");
    assert_eq!(node.marks("never"), 0);
    let (code, body) = get(node.address, "/readyz").expect("readyz");
    assert_eq!(code, 503);
    assert!(body.contains("setup-commands"), "{body}");

    let status = node.output(&["status"]);
    assert_eq!(status.status.code(), Some(1));
    kill(&mut agent, SIGTERM);
    wait_exit(&mut agent, Duration::from_secs(10)).expect("exits");
}

#[test]
fn a_corrupt_journal_is_set_aside_and_reported() {
    let node = Node::new("[commands]\nstart = [\"true\"]\n");
    let state = node.path("root/var/lib/rayefa");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::write(state.join("journal.json"), "{\"version\": 1, \"steps\": [").expect("corrupt");
    let mut agent = node.spawn();
    let (code, _) = node.wait_ready(Duration::from_secs(20));
    assert_eq!(code, 200, "{}", node.log());
    let (_, body) = get(node.address, "/v1/status").expect("status");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let warnings = doc["warnings"].to_string();
    assert!(
        warnings.contains("unreadable") && warnings.contains("journal.json.corrupt-"),
        "{warnings}"
    );
    let kept = std::fs::read_dir(&state)
        .expect("state dir")
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("journal.json.corrupt-")
        })
        .expect("the corrupt journal is kept");
    assert_eq!(
        std::fs::read_to_string(kept.path()).expect("kept"),
        "{\"version\": 1, \"steps\": ["
    );
    kill(&mut agent, SIGTERM);
    wait_exit(&mut agent, Duration::from_secs(10)).expect("exits");
}

#[test]
fn a_service_manager_that_stops_reading_notifications_cannot_stall_the_agent() {
    // Many setup commands make many STATUS= lines: more than a socket nobody reads can queue.
    let setup: Vec<String> = (0..60).map(|i| format!("\"echo {i}\"")).collect();
    let node = Node::new(&format!(
        "[commands]\nsetup = [{}]\nstart = [\"true\"]\n",
        setup.join(", ")
    ));
    let socket_path = node.path("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    let mut agent = node
        .command(&["run"])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("agent starts");
    let (code, body) = node.wait_ready(Duration::from_secs(20));
    assert_eq!(code, 200, "{body}");
    let mut first = [0u8; 64];
    let read = socket.recv(&mut first).expect("the first notification");
    assert_eq!(&first[..read], b"READY=1\n");
    kill(&mut agent, SIGTERM);
    let exit = wait_exit(&mut agent, Duration::from_secs(10)).expect("exits on SIGTERM");
    assert_eq!(exit.code(), Some(0));
}
