//! The publisher against a recording HTTP server on loopback that plays both the instance
//! metadata service and the EC2 API.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rayefa_wire::{
    API_VERSION, NodeFacts, NodeIdentity, NodeState, Role, StatusDocument, StepState, StepStatus,
};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::*;
use crate::engine::StatusBoard;

const TOKEN: &str = "imds-token-1";
const KEY_ID: &str = "ASIATESTKEY";
const INSTANCE: &str = "i-0123456789abcdef0";
const WINDOW: Duration = Duration::from_millis(300);

/// One CreateTags call the stand-in EC2 received.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    authorization: String,
    form: BTreeMap<String, String>,
}

impl Call {
    /// The tags of the call, by key.
    fn tags(&self) -> BTreeMap<String, String> {
        (1..)
            .map_while(|n| {
                let key = self.form.get(&format!("Tag.{n}.Key"))?;
                let value = self.form.get(&format!("Tag.{n}.Value"))?;
                Some((key.clone(), value.clone()))
            })
            .collect()
    }
}

#[derive(Debug, Default)]
struct Recorded {
    calls: Vec<Call>,
    /// EC2 answers 503 to this many calls before it accepts one.
    fail_next: u32,
}

/// The stand-in's base URL and what it recorded.
async fn stand_in() -> (String, Arc<Mutex<Recorded>>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local address"));
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let shared = recorded.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let recorded = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let recorded = recorded.clone();
                    async move { Ok::<_, Infallible>(answer(request, &recorded).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (base, recorded)
}

async fn answer(request: Request<Incoming>, recorded: &Mutex<Recorded>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let token_ok = request
        .headers()
        .get("x-aws-ec2-metadata-token")
        .is_some_and(|t| t == TOKEN);
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if method == Method::PUT && path == "/latest/api/token" {
        return reply(StatusCode::OK, TOKEN.to_owned());
    }
    if method == Method::POST && path == "/" {
        let mut recorded = recorded.lock().expect("recorder");
        recorded.calls.push(Call {
            at: Instant::now(),
            authorization,
            form: form_urlencoded::parse(&body).into_owned().collect(),
        });
        if recorded.fail_next > 0 {
            recorded.fail_next -= 1;
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "<Code>Unavailable</Code>".into(),
            );
        }
        return reply(
            StatusCode::OK,
            "<CreateTagsResponse><return>true</return></CreateTagsResponse>".into(),
        );
    }
    if method != Method::GET || !token_ok {
        return reply(StatusCode::UNAUTHORIZED, String::new());
    }
    let expiration =
        aws_smithy_types::DateTime::from(SystemTime::now() + Duration::from_secs(6 * 3600))
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .expect("formats");
    let text = match path.trim_start_matches("/latest/meta-data/") {
        "instance-id" => INSTANCE.to_owned(),
        "instance-type" => "c7i.large".to_owned(),
        // A Local Zone: its name is no guide to the region.
        "placement/availability-zone" => "us-west-2-lax-1a".to_owned(),
        "placement/region" => "us-west-2".to_owned(),
        "services/partition" => "aws".to_owned(),
        "services/domain" => "amazonaws.com".to_owned(),
        "iam/security-credentials/" => "rayefa-node\n".to_owned(),
        "iam/security-credentials/rayefa-node" => format!(
            r#"{{"Code":"Success","AccessKeyId":"{KEY_ID}","SecretAccessKey":"s3cret",
                "Token":"session-token","Expiration":"{expiration}"}}"#
        ),
        _ => return reply(StatusCode::NOT_FOUND, String::new()),
    };
    reply(StatusCode::OK, text)
}

fn document() -> StatusDocument {
    StatusDocument {
        api: API_VERSION,
        node: NodeIdentity {
            cluster_name: "c1".into(),
            role: Role::Worker,
            node_type: "efa_worker".into(),
        },
        facts: NodeFacts::default(),
        state: NodeState::Starting,
        steps: vec![
            StepStatus::pending("install-efa", vec![]),
            StepStatus::pending("probe-efa", vec!["install-efa".into()]),
        ],
        warnings: vec![],
        generated_at_ms: 0,
    }
}

/// Starts the publisher against the stand-in at `base`, reading `board`.
fn start(base: &str, board: &StatusBoard) -> tokio::task::JoinHandle<()> {
    let ec2 = Ec2Lookup::start(base.to_owned(), |_| {});
    let config = PublishConfig {
        imds_endpoint: base.to_owned(),
        ec2_endpoint: Some(format!("{base}/")),
        window: WINDOW,
        max_backoff: WINDOW * 2,
    };
    tokio::spawn(run(config, ec2, board.subscribe()))
}

/// Waits until the stand-in has recorded `n` calls, and returns them all.
async fn calls_after(recorded: &Mutex<Recorded>, n: usize) -> Vec<Call> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = recorded.lock().expect("recorder").calls.clone();
        if calls.len() >= n {
            return calls;
        }
        assert!(
            Instant::now() < deadline,
            "only {} calls: {calls:?}",
            calls.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn set_step(doc: &mut StatusDocument, name: &str, state: StepState) {
    if let Some(step) = doc.steps.iter_mut().find(|s| s.name == name) {
        step.state = state;
    }
}

#[tokio::test]
async fn changes_within_a_window_make_one_call_with_the_latest_state() {
    let (base, recorded) = stand_in().await;
    let board = StatusBoard::new(document());
    let publisher = start(&base, &board);

    let first = calls_after(&recorded, 1).await;
    let call = &first[0];
    assert!(
        call.authorization
            .starts_with(&format!("AWS4-HMAC-SHA256 Credential={KEY_ID}/")),
        "{}",
        call.authorization
    );
    // Signed for the region the metadata service names, not one guessed from the zone.
    assert!(
        call.authorization.contains("/us-west-2/ec2/aws4_request"),
        "{}",
        call.authorization
    );
    assert_eq!(call.form["Action"], "CreateTags");
    assert_eq!(call.form["ResourceId.1"], INSTANCE);
    let tags = call.tags();
    assert_eq!(tags["rayefa-state"], "starting");
    assert_eq!(tags["rayefa-step"], "install-efa:pending");
    assert_eq!(tags["rayefa-error"], "");
    let updated: u64 = tags["rayefa-updated"].parse().expect("seconds");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs();
    assert!(updated.abs_diff(now) < 60, "{updated} vs {now}");

    // Three changes at once: only the last reaches EC2, a window after the first call.
    board.update(|doc| {
        doc.state = NodeState::Bootstrapping;
        set_step(doc, "install-efa", StepState::Running);
    });
    board.update(|doc| {
        set_step(doc, "install-efa", StepState::Succeeded);
        set_step(doc, "probe-efa", StepState::Running);
    });
    board.update(|doc| {
        set_step(doc, "probe-efa", StepState::Succeeded);
        doc.state = NodeState::Ready;
    });
    let calls = calls_after(&recorded, 2).await;
    assert!(calls[1].at.duration_since(calls[0].at) >= WINDOW);
    let tags = calls[1].tags();
    assert_eq!(tags["rayefa-state"], "ready");
    assert!(tags["rayefa-step"].ends_with(":succeeded"), "{tags:?}");

    // Nothing changed since: no further call.
    tokio::time::sleep(WINDOW * 2).await;
    assert_eq!(recorded.lock().expect("recorder").calls.len(), 2);

    // A change right before the board goes away is still sent, and the publisher ends.
    board.update(|doc| {
        doc.state = NodeState::Failed {
            step: "probe-efa".into(),
            reason: "x".repeat(300),
        };
    });
    drop(board);
    tokio::time::timeout(Duration::from_secs(5), publisher)
        .await
        .expect("publisher ends with the board")
        .expect("publisher does not panic");
    let calls = calls_after(&recorded, 3).await;
    assert_eq!(calls.len(), 3);
    let tags = calls[2].tags();
    assert_eq!(tags["rayefa-state"], "failed");
    assert_eq!(tags["rayefa-step"], "probe-efa:failed");
    assert_eq!(tags["rayefa-error"], "x".repeat(256));
}

#[tokio::test]
async fn a_server_error_is_retried_no_sooner_than_a_window() {
    let (base, recorded) = stand_in().await;
    recorded.lock().expect("recorder").fail_next = 1;
    let board = StatusBoard::new(document());
    let _publisher = start(&base, &board);
    let calls = calls_after(&recorded, 2).await;
    assert!(calls[1].at.duration_since(calls[0].at) >= WINDOW);
    assert_eq!(calls[1].tags()["rayefa-state"], "starting");
    tokio::time::sleep(WINDOW * 2).await;
    assert_eq!(recorded.lock().expect("recorder").calls.len(), 2);
}

#[tokio::test]
async fn the_final_state_is_retried_past_the_attempts_until_ec2_accepts_it() {
    let (base, recorded) = stand_in().await;
    recorded.lock().expect("recorder").fail_next = ATTEMPTS + 3;
    let mut doc = document();
    doc.state = NodeState::Ready;
    let board = StatusBoard::new(doc);
    let _publisher = start(&base, &board);
    let calls = calls_after(&recorded, (ATTEMPTS + 4) as usize).await;
    assert!(calls.iter().all(|c| c.tags()["rayefa-state"] == "ready"));
    // The backoff stops growing at its ceiling (two windows here), plus at most a fifth.
    for pair in calls.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= WINDOW && gap <= WINDOW * 2 * 6 / 5 + WINDOW,
            "{gap:?}"
        );
    }
    // Accepted: nothing more.
    tokio::time::sleep(WINDOW * 3).await;
    assert_eq!(
        recorded.lock().expect("recorder").calls.len(),
        (ATTEMPTS + 4) as usize
    );
}

#[tokio::test]
async fn a_passing_state_is_given_up_after_its_attempts() {
    let (base, recorded) = stand_in().await;
    recorded.lock().expect("recorder").fail_next = ATTEMPTS + 3;
    let board = StatusBoard::new(document());
    let _publisher = start(&base, &board);
    calls_after(&recorded, ATTEMPTS as usize).await;
    tokio::time::sleep(WINDOW * 4).await;
    assert_eq!(
        recorded.lock().expect("recorder").calls.len(),
        ATTEMPTS as usize,
        "a starting state is not worth more calls"
    );
}

#[test]
fn only_the_final_state_outlasts_the_attempts_and_refusals() {
    let mut doc = document();
    let starting = Published::of(&doc);
    assert!(keep_trying(&starting, true, ATTEMPTS - 1));
    assert!(!keep_trying(&starting, true, ATTEMPTS));
    assert!(!keep_trying(&starting, false, 1));
    doc.state = NodeState::Failed {
        step: "probe-efa".into(),
        reason: "no EFA".into(),
    };
    let failed = Published::of(&doc);
    assert!(keep_trying(&failed, true, ATTEMPTS * 10));
    assert!(keep_trying(&failed, false, ATTEMPTS * 10));
    let config = PublishConfig::new(String::new(), None);
    let wait = backoff(&config, 40);
    assert!(
        wait >= MAX_BACKOFF && wait <= MAX_BACKOFF * 6 / 5,
        "{wait:?}"
    );
    assert!(backoff(&config, 1) < config.window * 2);
}

#[test]
fn the_endpoint_comes_from_the_metadata_region_and_domain() {
    let local_zone = Ec2Facts {
        availability_zone: "us-west-2-lax-1a".into(),
        region: Some("us-west-2".into()),
        partition: Some("aws".into()),
        domain: Some("amazonaws.com".into()),
        ..Ec2Facts::default()
    };
    assert_eq!(
        ec2_endpoint(&local_zone),
        Some((
            "https://ec2.us-west-2.amazonaws.com/".to_owned(),
            "us-west-2".to_owned()
        ))
    );
    let china = Ec2Facts {
        availability_zone: "cn-north-1a".into(),
        region: Some("cn-north-1".into()),
        partition: Some("aws-cn".into()),
        ..Ec2Facts::default()
    };
    assert_eq!(
        ec2_endpoint(&china).map(|(url, _)| url).as_deref(),
        Some("https://ec2.cn-north-1.amazonaws.com.cn/")
    );
    // A metadata service without placement/region: the zone's name, when it is an ordinary one.
    let old = Ec2Facts {
        availability_zone: "eu-west-1b".into(),
        ..Ec2Facts::default()
    };
    assert_eq!(
        ec2_endpoint(&old).map(|(_, region)| region).as_deref(),
        Some("eu-west-1")
    );
}

#[tokio::test]
async fn the_lookup_takes_region_and_partition_from_the_metadata_service() {
    let (base, _) = stand_in().await;
    let facts = Ec2Lookup::start(base, |_| {}).wait().await.expect("on EC2");
    assert_eq!(facts.availability_zone, "us-west-2-lax-1a");
    assert_eq!(facts.region.as_deref(), Some("us-west-2"));
    assert_eq!(facts.partition.as_deref(), Some("aws"));
    assert_eq!(facts.domain.as_deref(), Some("amazonaws.com"));
}

#[tokio::test]
async fn nothing_is_published_off_ec2() {
    let board = StatusBoard::new(document());
    let config = PublishConfig::new(
        "http://127.0.0.1:9".into(),
        Some("http://127.0.0.1:9/".into()),
    );
    tokio::time::timeout(
        Duration::from_secs(1),
        run(config, Ec2Lookup::known(None), board.subscribe()),
    )
    .await
    .expect("returns at once without an instance");
}

#[test]
fn region_comes_from_the_zone() {
    assert_eq!(region_of("us-east-1a"), Some("us-east-1"));
    assert_eq!(region_of("ap-northeast-1d"), Some("ap-northeast-1"));
    assert_eq!(region_of("us-east-1"), None);
    assert_eq!(region_of(""), None);
}

#[test]
fn rebooting_names_the_step_that_asked() {
    let mut doc = document();
    doc.state = NodeState::Rebooting {
        step: "install-efa".into(),
    };
    let published = Published::of(&doc);
    assert_eq!(published.state, "rebooting");
    assert_eq!(published.step, "install-efa:rebooting");
    assert_eq!(published.error, "");
}
