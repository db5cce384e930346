//! A recording, fault-injecting HTTP proxy in front of moto.
//!
//! moto has no placement groups, cannot answer with capacity or throttling errors, ignores
//! `ClientToken` and `MaxResults` on the calls rayefa makes, and drops the `efa` interface type
//! from what it describes. This proxy sits between the orchestrator and moto on loopback and
//! adds exactly those parts of EC2's behaviour:
//!
//! - every request is recorded (service, action, the form-encoded parameters of the EC2 Query
//!   API) so tests assert on what was asked, for example the exact RunInstances arguments;
//! - faults queued per action answer the next matching requests with an EC2 error (HTTP
//!   status, code, message), or forward the request and then lose the answer;
//! - placement groups are created and described here;
//! - RunInstances is idempotent by `ClientToken`, as on EC2;
//! - a listing action can be cut into pages, to exercise paginators;
//! - new instances can be kept out of DescribeInstances for a while, as EC2's eventual
//!   consistency does (moto lists an instance the moment RunInstances returns it): hidden
//!   from filtered listings, and `InvalidInstanceID.NotFound` when asked for by id or tagged
//!   with CreateTags;
//! - RunInstances can be refused as EC2 refuses a just-created instance profile;
//! - SSM GetParameters also answers public parameters moto does not have (the Deep Learning
//!   AMIs' `/aws/service/deeplearning/...`; moto knows only the Amazon Linux ones and refuses
//!   PutParameter under `/aws`), and records the names asked for as `Names.N` parameters;
//! - S3 (GetObject, HeadObject, PutObject, path-style) is passed through with its headers,
//!   and a presigned URL is checked as S3 checks it, which moto does not: refused after
//!   `X-Amz-Expires`, and refused when its signature is not the one the test credentials
//!   ([`TEST_SECRET`]) give for what it asks.
//!
//! It runs on its own thread and runtime so synchronous tests can use it.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The secret access key every test's credentials use (`aws_world`), with which the proxy
/// checks presigned URLs.
pub const TEST_SECRET: &str = "testing";

/// The prefix of the page tokens the proxy hands out.
const PAGE_TOKEN: &str = "rayefa-proxy-page-";

/// What a queued fault does to the request it meets.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with an EC2 error without asking moto.
    Error {
        /// HTTP status, for example 500 for `InsufficientInstanceCapacity`.
        status: u16,
        /// The EC2 error code.
        code: String,
        /// The error message.
        message: String,
    },
    /// Forward the request (so its effect happens) and then answer HTTP 500, as when an
    /// answer is lost on the way back.
    LoseResponse,
    /// RunInstances only: launch at most this many (EC2 starting fewer than `MaxCount` when
    /// capacity runs short).
    LaunchOnly(usize),
}

impl Fault {
    /// `InsufficientInstanceCapacity`, as EC2 answers a launch it has no hosts for.
    pub fn insufficient_capacity() -> Fault {
        Fault::Error {
            status: 500,
            code: "InsufficientInstanceCapacity".into(),
            message: "We currently do not have sufficient capacity in the Availability Zone \
                      you requested."
                .into(),
        }
    }

    /// `RequestLimitExceeded`, EC2's throttling error.
    pub fn throttled() -> Fault {
        Fault::Error {
            status: 503,
            code: "RequestLimitExceeded".into(),
            message: "Request limit exceeded.".into(),
        }
    }

    /// What RunInstances answers for a while after an instance profile was created (IAM is
    /// eventually consistent; moto accepts the profile at once).
    pub fn instance_profile_not_ready(name: &str) -> Fault {
        Fault::Error {
            status: 400,
            code: "InvalidParameterValue".into(),
            message: format!(
                "Value ({name}) for parameter iamInstanceProfile.name is invalid. Invalid IAM \
                 Instance Profile name"
            ),
        }
    }

    /// A plain internal error.
    pub fn internal_error() -> Fault {
        Fault::Error {
            status: 500,
            code: "InternalError".into(),
            message: "An internal error has occurred.".into(),
        }
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The signing name from the request's credential scope: `ec2`, `ssm`, `sts`, `iam`.
    pub service: String,
    /// The Query API `Action`, or the JSON protocol's `X-Amz-Target` operation.
    pub action: String,
    /// The form parameters in request order (empty for JSON-protocol requests).
    pub params: Vec<(String, String)>,
    /// `forwarded`, `injected <code>`, `lost`, `idempotent` or `proxy`.
    pub outcome: String,
}

impl Recorded {
    /// The value of the form parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The parameters as a sorted map, for whole-request comparisons.
    pub fn param_map(&self) -> BTreeMap<String, String> {
        self.params.iter().cloned().collect()
    }
}

/// A placement group the proxy knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementGroup {
    /// Its name.
    pub name: String,
    /// `cluster`, `spread` or `partition`.
    pub strategy: String,
    /// `pg-...`
    pub id: String,
}

#[derive(Debug, Default)]
struct State {
    recorded: Vec<Recorded>,
    faults: Vec<QueuedFault>,
    placement_groups: Vec<PlacementGroup>,
    /// RunInstances answers by client token.
    launches: HashMap<String, Bytes>,
    /// Actions whose listing is cut into pages: (the set element, items per page).
    pages: HashMap<String, (String, usize)>,
    /// How long new instances stay out of DescribeInstances; none by default.
    hide_new_for: Option<std::time::Duration>,
    /// Instances launched while hiding was on, with the time they appear.
    hidden_until: HashMap<String, std::time::Instant>,
    /// SSM public parameters the proxy answers itself: name, value.
    public_parameters: BTreeMap<String, String>,
}

impl State {
    /// The instances still hidden at this moment.
    fn hidden_now(&self) -> Vec<String> {
        let now = std::time::Instant::now();
        self.hidden_until
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A fault waiting for its request.
#[derive(Debug, Clone)]
struct QueuedFault {
    action: String,
    /// Only requests with this parameter value match.
    only_if: Option<(String, String)>,
    fault: Fault,
}

/// A running proxy.
#[derive(Debug)]
pub struct Ec2Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ec2Proxy {
    /// Starts a proxy on a free loopback port that forwards to `upstream` (moto's base URL).
    pub fn start(upstream: &str) -> Ec2Proxy {
        let state = Arc::new(Mutex::new(State::default()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(serve(upstream, thread_state, addr_tx, shutdown_rx));
        });
        let addr = addr_rx.recv().expect("the proxy reports its address");
        Ec2Proxy {
            addr,
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// The base URL for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues `fault` for the next request of `action` that has not met one yet.
    pub fn inject(&self, action: &str, fault: Fault) {
        self.lock().faults.push(QueuedFault {
            action: action.to_owned(),
            only_if: None,
            fault,
        });
    }

    /// Queues `fault` for the next request of `action` whose parameter `name` is `value`
    /// (for example the workers' `InstanceType`).
    pub fn inject_if(&self, action: &str, name: &str, value: &str, fault: Fault) {
        self.lock().faults.push(QueuedFault {
            action: action.to_owned(),
            only_if: Some((name.to_owned(), value.to_owned())),
            fault,
        });
    }

    /// Cuts the answers of `action` into pages of `per_page` items of the set element `set`
    /// (for example `instanceTypeSet`), with page tokens of the proxy's own.
    pub fn paginate(&self, action: &str, set: &str, per_page: usize) {
        self.lock()
            .pages
            .insert(action.to_owned(), (set.to_owned(), per_page.max(1)));
    }

    /// Keeps every instance launched from now on out of DescribeInstances for `delay` after
    /// RunInstances returned it, as EC2 may.
    pub fn hide_new_instances(&self, delay: std::time::Duration) {
        self.lock().hide_new_for = Some(delay);
    }

    /// Makes SSM's GetParameters answer the public parameter `name` with `value`, as AWS's
    /// own parameters are answered (moto has only some of them).
    pub fn add_public_parameter(&self, name: &str, value: &str) {
        self.lock()
            .public_parameters
            .insert(name.to_owned(), value.to_owned());
    }

    /// Every request so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.lock().recorded.clone()
    }

    /// The requests of one action so far.
    pub fn requests(&self, action: &str) -> Vec<Recorded> {
        self.lock()
            .recorded
            .iter()
            .filter(|r| r.action == action)
            .cloned()
            .collect()
    }

    /// The placement groups created so far (and seeded).
    pub fn placement_groups(&self) -> Vec<PlacementGroup> {
        self.lock().placement_groups.clone()
    }

    /// Adds a placement group as if it had been created earlier.
    pub fn add_placement_group(&self, name: &str, strategy: &str) {
        let mut state = self.lock();
        let id = format!("pg-{:017x}", state.placement_groups.len() + 1);
        state.placement_groups.push(PlacementGroup {
            name: name.to_owned(),
            strategy: strategy.to_owned(),
            id,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("proxy state lock")
    }
}

impl Drop for Ec2Proxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    upstream: String,
    state: Arc<Mutex<State>>,
    addr_tx: std::sync::mpsc::Sender<SocketAddr>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the proxy");
    addr_tx
        .send(listener.local_addr().expect("proxy address"))
        .expect("the test waits for the address");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("proxy's HTTP client");
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let upstream = upstream.clone();
        let state = Arc::clone(&state);
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                handle(
                    request,
                    upstream.clone(),
                    Arc::clone(&state),
                    client.clone(),
                )
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The body the client gets, with its status.
struct Answer {
    status: u16,
    body: Bytes,
}

async fn handle(
    request: Request<Incoming>,
    upstream: String,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let service = signing_service(&parts.headers).unwrap_or_default();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let presigned_s3 = query
        .iter()
        .any(|(k, v)| k == "X-Amz-Credential" && v.split('/').nth(3) == Some("s3"));
    if service == "s3" || presigned_s3 {
        return Ok(s3::handle(parts, body, query, &upstream, &state, &client).await);
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.rsplit('.').next().unwrap_or(t).to_owned());
    let params: Vec<(String, String)> = if target.is_some() {
        Vec::new()
    } else {
        form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    };
    let action = target.unwrap_or_else(|| {
        params
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    });
    let mut recorded = Recorded {
        service,
        action: action.clone(),
        params,
        outcome: "forwarded".into(),
    };

    let fault = {
        let mut state = state.lock().expect("proxy state lock");
        let matching = state.faults.iter().position(|queued| {
            queued.action == action
                && queued
                    .only_if
                    .as_ref()
                    .is_none_or(|(name, value)| recorded.param(name) == Some(value.as_str()))
        });
        matching.map(|at| state.faults.remove(at).fault)
    };
    let forward = Forward {
        client: &client,
        upstream: &upstream,
        method: parts.method.clone(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
        headers: &parts.headers,
    };
    let answer = match fault {
        Some(Fault::Error {
            status,
            code,
            message,
        }) => {
            recorded.outcome = format!("injected {code}");
            error_answer(status, &code, &message)
        }
        Some(Fault::LoseResponse) => {
            let answer = answer_ec2(&forward, &body, &mut recorded, &state).await;
            recorded.outcome = "lost".into();
            drop(answer);
            error_answer(500, "InternalError", "The answer was lost (injected).")
        }
        Some(Fault::LaunchOnly(count)) => {
            let params: Vec<(String, String)> = recorded
                .params
                .iter()
                .map(|(k, v)| match k.as_str() {
                    "MaxCount" => (k.clone(), count.to_string()),
                    "MinCount" => (k.clone(), "1".to_owned()),
                    _ => (k.clone(), v.clone()),
                })
                .collect();
            let body: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&params)
                .finish();
            let answer = answer_ec2(&forward, &Bytes::from(body), &mut recorded, &state).await;
            recorded.outcome = format!("launched at most {count}");
            answer
        }
        None => answer_ec2(&forward, &body, &mut recorded, &state).await,
    };
    state
        .lock()
        .expect("proxy state lock")
        .recorded
        .push(recorded);
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/xml"),
    );
    Ok(response)
}

/// How to pass a request on to moto.
struct Forward<'a> {
    client: &'a reqwest::Client,
    upstream: &'a str,
    method: hyper::Method,
    path: &'a str,
    headers: &'a hyper::HeaderMap,
}

impl Forward<'_> {
    async fn send(&self, body: Bytes) -> Answer {
        let method = reqwest::Method::from_bytes(self.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let mut request = self
            .client
            .request(method, format!("{}{}", self.upstream, self.path));
        for (name, value) in self.headers {
            if name == hyper::header::HOST || name == hyper::header::CONTENT_LENGTH {
                continue;
            }
            request = request.header(name.as_str(), value.as_bytes());
        }
        match request.body(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap_or_default();
                Answer { status, body }
            }
            Err(error) => error_answer(502, "ProxyUpstreamError", &error.to_string()),
        }
    }
}

/// The proxy's own EC2 behaviour, or moto's answer.
async fn answer_ec2(
    forward: &Forward<'_>,
    body: &Bytes,
    recorded: &mut Recorded,
    state: &Arc<Mutex<State>>,
) -> Answer {
    if recorded.service == "ssm" && recorded.action == "GetParameters" {
        return get_parameters(forward, body, recorded, state).await;
    }
    if recorded.service != "ec2" {
        return forward.send(body.clone()).await;
    }
    match recorded.action.as_str() {
        "CreatePlacementGroup" => {
            recorded.outcome = "proxy".into();
            create_placement_group(recorded, state)
        }
        "DescribePlacementGroups" => {
            recorded.outcome = "proxy".into();
            describe_placement_groups(recorded, state)
        }
        "RunInstances" => run_instances(forward, body, recorded, state).await,
        "DescribeInstances" => describe_instances(forward, body, recorded, state).await,
        "CreateTags" => create_tags(forward, body, recorded, state).await,
        action => {
            let paging = state
                .lock()
                .expect("proxy state lock")
                .pages
                .get(action)
                .cloned();
            match paging {
                Some((set, per_page)) => paged(forward, recorded, &set, per_page).await,
                None => forward.send(body.clone()).await,
            }
        }
    }
}

/// SSM's GetParameters (JSON protocol) with the proxy's public parameters: those moto is not
/// asked for; the rest are, and the two answers are merged.
async fn get_parameters(
    forward: &Forward<'_>,
    body: &Bytes,
    recorded: &mut Recorded,
    state: &Arc<Mutex<State>>,
) -> Answer {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let names: Vec<String> = request["Names"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    recorded.params = names
        .iter()
        .enumerate()
        .map(|(i, name)| (format!("Names.{}", i + 1), name.clone()))
        .collect();
    let known = state
        .lock()
        .expect("proxy state lock")
        .public_parameters
        .clone();
    let (ours, theirs): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| known.contains_key(n));
    if ours.is_empty() {
        return forward.send(body.clone()).await;
    }
    recorded.outcome = "proxy".into();
    let mut answer = serde_json::json!({"Parameters": [], "InvalidParameters": []});
    if !theirs.is_empty() {
        let asked = serde_json::json!({ "Names": theirs });
        let upstream = forward.send(Bytes::from(asked.to_string())).await;
        if upstream.status != 200 {
            return upstream;
        }
        answer = serde_json::from_slice(&upstream.body).unwrap_or(answer);
    }
    for name in ours {
        let parameter = serde_json::json!({
            "Name": name,
            "Type": "String",
            "Value": known[&name],
            "Version": 1,
            "DataType": "aws:ec2:image",
        });
        if let Some(list) = answer["Parameters"].as_array_mut() {
            list.push(parameter);
        }
    }
    Answer {
        status: 200,
        body: Bytes::from(answer.to_string()),
    }
}

fn create_placement_group(recorded: &Recorded, state: &Arc<Mutex<State>>) -> Answer {
    let Some(name) = recorded.param("GroupName") else {
        return error_answer(400, "MissingParameter", "GroupName is required.");
    };
    let strategy = recorded.param("Strategy").unwrap_or("cluster").to_owned();
    let mut state = state.lock().expect("proxy state lock");
    if state.placement_groups.iter().any(|g| g.name == name) {
        return error_answer(
            400,
            "InvalidPlacementGroup.Duplicate",
            &format!("The Placement Group '{name}' already exists."),
        );
    }
    let group = PlacementGroup {
        name: name.to_owned(),
        strategy,
        id: format!("pg-{:017x}", state.placement_groups.len() + 1),
    };
    let item = placement_group_xml(&group, "placementGroup");
    state.placement_groups.push(group);
    ok_answer("CreatePlacementGroupResponse", &item)
}

fn describe_placement_groups(recorded: &Recorded, state: &Arc<Mutex<State>>) -> Answer {
    let state = state.lock().expect("proxy state lock");
    let names: Vec<&str> = recorded
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("GroupName."))
        .map(|(_, v)| v.as_str())
        .collect();
    if let Some(unknown) = names
        .iter()
        .find(|name| !state.placement_groups.iter().any(|g| &g.name == *name))
    {
        return error_answer(
            400,
            "InvalidPlacementGroup.Unknown",
            &format!("The Placement Group '{unknown}' is unknown."),
        );
    }
    let filters = query_filters(&recorded.params);
    let items: String = state
        .placement_groups
        .iter()
        .filter(|g| names.is_empty() || names.contains(&g.name.as_str()))
        .filter(|g| {
            filters
                .iter()
                .all(|(filter, values)| match filter.as_str() {
                    "group-name" => values.contains(&g.name),
                    "strategy" => values.contains(&g.strategy),
                    "state" => values.iter().any(|v| v == "available"),
                    _ => false,
                })
        })
        .map(|g| placement_group_xml(g, "item"))
        .collect();
    ok_answer(
        "DescribePlacementGroupsResponse",
        &format!("<placementGroupSet>{items}</placementGroupSet>"),
    )
}

async fn run_instances(
    forward: &Forward<'_>,
    body: &Bytes,
    recorded: &mut Recorded,
    state: &Arc<Mutex<State>>,
) -> Answer {
    if let Some(group) = recorded.param("Placement.GroupName").map(str::to_owned) {
        let known = state
            .lock()
            .expect("proxy state lock")
            .placement_groups
            .iter()
            .any(|g| g.name == group);
        if !known {
            recorded.outcome = "proxy".into();
            return error_answer(
                400,
                "InvalidPlacementGroup.Unknown",
                &format!("The Placement Group '{group}' is unknown."),
            );
        }
    }
    let token = recorded.param("ClientToken").map(str::to_owned);
    if let Some(token) = &token {
        let earlier = state
            .lock()
            .expect("proxy state lock")
            .launches
            .get(token)
            .cloned();
        if let Some(body) = earlier {
            recorded.outcome = "idempotent".into();
            return Answer { status: 200, body };
        }
    }
    let answer = forward.send(body.clone()).await;
    if answer.status == 200 {
        let mut state = state.lock().expect("proxy state lock");
        if let Some(token) = token {
            state.launches.insert(token, answer.body.clone());
        }
        if let Some(delay) = state.hide_new_for {
            let until = std::time::Instant::now() + delay;
            for id in element_texts(&String::from_utf8_lossy(&answer.body), "instanceId") {
                state.hidden_until.insert(id, until);
            }
        }
    }
    answer
}

/// DescribeInstances without the instances still hidden: asked for by id, EC2's
/// `InvalidInstanceID.NotFound`; in a filtered listing, left out (with their reservation).
async fn describe_instances(
    forward: &Forward<'_>,
    body: &Bytes,
    recorded: &mut Recorded,
    state: &Arc<Mutex<State>>,
) -> Answer {
    let hidden = state.lock().expect("proxy state lock").hidden_now();
    if let Some(refused) = refuse_hidden(recorded, "InstanceId.", &hidden) {
        return refused;
    }
    let answer = forward.send(body.clone()).await;
    if answer.status != 200 || hidden.is_empty() {
        return answer;
    }
    let text = String::from_utf8_lossy(&answer.body);
    let (open, close) = ("<reservationSet>", "</reservationSet>");
    let (Some(start), Some(end)) = (text.find(open), text.find(close)) else {
        return answer;
    };
    let inner = &text[start + open.len()..end];
    let mut left_out = Vec::new();
    let kept: String = top_level_items(inner)
        .into_iter()
        .filter(|reservation| {
            let ids = element_texts(reservation, "instanceId");
            let hide = ids.iter().any(|id| hidden.contains(id));
            if hide {
                left_out.extend(ids);
            }
            !hide
        })
        .collect();
    if left_out.is_empty() {
        return answer;
    }
    recorded.outcome = format!("hid {}", left_out.join(" "));
    let body = format!("{}{open}{kept}{}", &text[..start], &text[end..]);
    Answer {
        status: 200,
        body: Bytes::from(body),
    }
}

/// CreateTags, refused for an instance still hidden as EC2 refuses one it does not know yet
/// (`InvalidInstanceID.NotFound`); nothing of the request is tagged then, as on EC2.
async fn create_tags(
    forward: &Forward<'_>,
    body: &Bytes,
    recorded: &mut Recorded,
    state: &Arc<Mutex<State>>,
) -> Answer {
    let hidden = state.lock().expect("proxy state lock").hidden_now();
    if let Some(refused) = refuse_hidden(recorded, "ResourceId.", &hidden) {
        return refused;
    }
    forward.send(body.clone()).await
}

/// EC2's answer to a request that names, in a parameter starting `prefix`, an instance it does
/// not know yet; `None` when the request names none of `hidden`.
fn refuse_hidden(recorded: &mut Recorded, prefix: &str, hidden: &[String]) -> Option<Answer> {
    let asked = recorded
        .params
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .find(|id| hidden.contains(id))?
        .clone();
    recorded.outcome = format!("hid {asked}");
    Some(error_answer(
        400,
        "InvalidInstanceID.NotFound",
        &format!("The instance ID '{asked}' does not exist"),
    ))
}

/// The text of every `<name>...</name>` element in `xml`.
fn element_texts(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(after[..end].to_owned());
        rest = &after[end + close.len()..];
    }
    found
}

/// Forwards a listing without the proxy's page token and answers one page of it.
async fn paged(forward: &Forward<'_>, recorded: &Recorded, set: &str, per_page: usize) -> Answer {
    let page: usize = recorded
        .param("NextToken")
        .and_then(|t| t.strip_prefix(PAGE_TOKEN))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let upstream_params = recorded
        .params
        .iter()
        .filter(|(k, _)| k != "NextToken" && k != "MaxResults");
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(upstream_params)
        .finish();
    let answer = forward.send(Bytes::from(body)).await;
    if answer.status != 200 {
        return answer;
    }
    let text = String::from_utf8_lossy(&answer.body);
    let (open, close) = (format!("<{set}>"), format!("</{set}>"));
    let (Some(start), Some(end)) = (text.find(&open), text.find(&close)) else {
        return answer;
    };
    let inner = &text[start + open.len()..end];
    let items = top_level_items(inner);
    let first = page * per_page;
    let chosen: String = items.iter().skip(first).take(per_page).copied().collect();
    let next = if first + per_page < items.len() {
        format!("<nextToken>{PAGE_TOKEN}{}</nextToken>", page + 1)
    } else {
        String::new()
    };
    let rest = text[end + close.len()..].replace("<nextToken></nextToken>", "");
    let body = format!("{}{open}{chosen}{close}{next}{rest}", &text[..start]);
    Answer {
        status: 200,
        body: Bytes::from(body),
    }
}

/// The `<item>...</item>` children of an element's content, nested items left inside them.
fn top_level_items(inner: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut at = 0usize;
    while at < inner.len() {
        let rest = &inner[at..];
        if rest.starts_with("<item>") {
            if depth == 0 {
                start = at;
            }
            depth += 1;
            at += "<item>".len();
        } else if rest.starts_with("</item>") {
            depth = depth.saturating_sub(1);
            at += "</item>".len();
            if depth == 0 {
                items.push(&inner[start..at]);
            }
        } else {
            at += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    items
}

/// `Filter.N.Name` / `Filter.N.Value.M` pairs.
fn query_filters(params: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let mut filters: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for (key, value) in params {
        let Some(rest) = key.strip_prefix("Filter.") else {
            continue;
        };
        let Some((index, field)) = rest.split_once('.') else {
            continue;
        };
        let entry = filters.entry(index.to_owned()).or_default();
        if field == "Name" {
            entry.0 = value.clone();
        } else if field.starts_with("Value.") {
            entry.1.push(value.clone());
        }
    }
    filters.into_values().collect()
}

fn placement_group_xml(group: &PlacementGroup, element: &str) -> String {
    format!(
        "<{element}><groupName>{name}</groupName><state>available</state>\
         <strategy>{strategy}</strategy><groupId>{id}</groupId>\
         <groupArn>arn:aws:ec2:us-east-1:123456789012:placement-group/{name}</groupArn>\
         </{element}>",
        name = group.name,
        strategy = group.strategy,
        id = group.id,
    )
}

fn ok_answer(root: &str, content: &str) -> Answer {
    Answer {
        status: 200,
        body: Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <{root} xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
             <requestId>rayefa-proxy</requestId>{content}</{root}>"
        )),
    }
}

fn error_answer(status: u16, code: &str, message: &str) -> Answer {
    Answer {
        status,
        body: Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>\
             </Errors><RequestID>rayefa-proxy</RequestID></Response>"
        )),
    }
}

/// The service name in a SigV4 `Authorization` header's credential scope.
fn signing_service(headers: &hyper::HeaderMap) -> Option<String> {
    let authorization = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let credential = authorization
        .split([',', ' '])
        .find_map(|part| part.strip_prefix("Credential="))?;
    credential.split('/').nth(3).map(str::to_owned)
}

/// S3 behind the proxy.
mod s3 {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{
        PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
        UriPathNormalizationMode, sign,
    };
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;
    use http_body_util::Full;
    use hyper::Response;
    use hyper::body::Bytes;

    use super::{Fault, Recorded, State, TEST_SECRET};

    /// Records, checks (faults, presigned URLs) and forwards one S3 request.
    pub(super) async fn handle(
        parts: hyper::http::request::Parts,
        body: Bytes,
        query: Vec<(String, String)>,
        upstream: &str,
        state: &Arc<Mutex<State>>,
        client: &reqwest::Client,
    ) -> Response<Full<Bytes>> {
        let action = match parts.method.as_str() {
            "GET" => "GetObject",
            "HEAD" => "HeadObject",
            "PUT" => "PutObject",
            other => other,
        };
        let path = parts.uri.path().to_owned();
        let mut params = vec![("path".to_owned(), path.clone())];
        params.extend(query.iter().cloned());
        let mut recorded = Recorded {
            service: "s3".into(),
            action: action.to_owned(),
            params,
            outcome: "forwarded".into(),
        };
        let fault = {
            let mut state = state.lock().expect("proxy state lock");
            let at = state.faults.iter().position(|q| q.action == action);
            at.map(|at| state.faults.remove(at).fault)
        };
        let presigned = query.iter().any(|(k, _)| k == "X-Amz-Signature");
        let host = parts
            .headers
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let refusal = match fault {
            Some(Fault::Error {
                status,
                code,
                message,
            }) => Some((status, code, message)),
            Some(_) => Some((500, "InternalError".into(), "unsupported S3 fault".into())),
            None if presigned => check_presigned(&host, &path, &query, SystemTime::now()).err(),
            None => None,
        };
        let response = match refusal {
            Some((status, code, message)) => {
                recorded.outcome = format!("refused {code}");
                error(status, &code, &message)
            }
            None => {
                if presigned {
                    recorded.outcome = "presigned".into();
                }
                forward(&parts, body, upstream, client).await
            }
        };
        state
            .lock()
            .expect("proxy state lock")
            .recorded
            .push(recorded);
        response
    }

    async fn forward(
        parts: &hyper::http::request::Parts,
        body: Bytes,
        upstream: &str,
        client: &reqwest::Client,
    ) -> Response<Full<Bytes>> {
        let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = client.request(method, format!("{upstream}{path}"));
        for (name, value) in &parts.headers {
            if name == hyper::header::HOST || name == hyper::header::CONTENT_LENGTH {
                continue;
            }
            request = request.header(name.as_str(), value.as_bytes());
        }
        let answer = match request.body(body).send().await {
            Ok(answer) => answer,
            Err(e) => return error(502, "ProxyUpstreamError", &e.to_string()),
        };
        let mut response = Response::builder().status(answer.status().as_u16());
        for (name, value) in answer.headers() {
            if matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection"
            ) {
                continue;
            }
            response = response.header(name.as_str(), value.as_bytes());
        }
        let bytes = answer.bytes().await.unwrap_or_default();
        response
            .body(Full::new(bytes))
            .unwrap_or_else(|e| error(502, "ProxyResponse", &e.to_string()))
    }

    fn error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <Error><Code>{code}</Code><Message>{message}</Message></Error>"
        );
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() =
            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::FORBIDDEN);
        response
    }

    /// What S3 checks of a presigned GET: not expired, and signed with the test secret for
    /// exactly this host, path, time, lifetime, credential scope and token.
    fn check_presigned(
        host: &str,
        path: &str,
        query: &[(String, String)],
        now: SystemTime,
    ) -> Result<(), (u16, String, String)> {
        let get = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let denied = |code: &str, message: &str| (403, code.to_owned(), message.to_owned());
        let malformed = || denied("AuthorizationQueryParametersError", "malformed query");
        let date = get("X-Amz-Date").and_then(amz_date).ok_or_else(malformed)?;
        let expires: u64 = get("X-Amz-Expires")
            .and_then(|e| e.parse().ok())
            .ok_or_else(malformed)?;
        if expires > 7 * 24 * 3600 {
            return Err(denied(
                "AuthorizationQueryParametersError",
                "X-Amz-Expires must be less than a week (in seconds)",
            ));
        }
        if now > date + Duration::from_secs(expires) {
            return Err(denied("AccessDenied", "Request has expired"));
        }
        let scope: Vec<&str> = get("X-Amz-Credential")
            .ok_or_else(malformed)?
            .split('/')
            .collect();
        let [key, _, region, service, _] = scope[..] else {
            return Err(malformed());
        };
        let credentials = Credentials::new(
            key,
            TEST_SECRET,
            get("X-Amz-Security-Token").map(str::to_owned),
            None,
            "proxy",
        );
        let identity: Identity = credentials.into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(expires));
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(date)
            .settings(settings)
            .build()
            .map_err(|_| malformed())?
            .into();
        let url = format!("http://{host}{path}");
        let signable = SignableRequest::new(
            "GET",
            &url,
            [("host", host)].into_iter(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|_| malformed())?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|_| malformed())?
            .into_parts();
        let expected = instructions
            .params()
            .iter()
            .find(|(k, _)| *k == "X-Amz-Signature")
            .map(|(_, v)| v.to_string());
        if expected.as_deref() == get("X-Amz-Signature") {
            Ok(())
        } else {
            Err(denied(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            ))
        }
    }

    /// `20261203T120000Z` as a time.
    fn amz_date(text: &str) -> Option<SystemTime> {
        let digits = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
        if text.len() != 16 || &text[8..9] != "T" || !text.ends_with('Z') {
            return None;
        }
        let (y, m, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
        let (hh, mm, ss) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
        // Days from 1970-01-01 to y-m-d (Howard Hinnant's days_from_civil).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn amz_dates_are_read() {
        let at = amz_date("20261203T120000Z").expect("a date");
        assert_eq!(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs(),
            1_796_299_200
        );
        assert_eq!(amz_date("2026-12-03"), None);
    }
}
