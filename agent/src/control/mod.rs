//! The agent's control surface: the only requests that make it do something, and so the only
//! ones that must prove they come from the cluster's orchestrator.
//!
//! `POST /v1/control/pingpong/listen` starts a fabric listener (`rayefa-agent pingpong listen`
//! in a child process, for a bounded time) and answers its address; `POST
//! /v1/control/pingpong/ping` pings a peer's address in a child and answers the report. Each
//! request carries `Authorization: Bearer SECRET`, the per-cluster secret of the agent's
//! configuration (`agent.control_secret`), compared in constant time. Without a configured
//! secret every control request is refused. See docs/check.md for the threat model.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes};
use hyper::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use rayefa_wire::{ListenRequest, ListenerReady, PingReport, PingRequest};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;

use crate::serve::respond;

/// Where control requests live; everything under it needs the secret.
pub(crate) const PREFIX: &str = "/v1/control/";

/// The largest request body.
const MAX_BODY: usize = 16 * 1024;

/// Control children running at once; more requests wait for a slot.
const MAX_CHILDREN: usize = 4;

/// The longest a listener may be asked to serve.
const MAX_SERVE_FOR: Duration = Duration::from_secs(3600);

/// How long a listener gets to print its address.
const LISTENER_START: Duration = Duration::from_secs(30);

/// What the control surface needs: the secret and the executable its children run.
#[derive(Debug)]
pub(crate) struct Control {
    /// SHA-256 of the secret, so that comparisons take the same time whatever the lengths.
    secret: Option<[u8; 32]>,
    program: PathBuf,
    children: Arc<Semaphore>,
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The agent has no secret: nothing may be controlled.
    #[error("control requests are disabled: this agent has no agent.control_secret")]
    Disabled,
    /// No `Authorization: Bearer` header.
    #[error("control requests need `Authorization: Bearer <the cluster's control secret>`")]
    Missing,
    /// A secret that is not this cluster's.
    #[error("wrong control secret")]
    Wrong,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::Disabled | Refusal::Wrong => StatusCode::FORBIDDEN,
            Refusal::Missing => StatusCode::UNAUTHORIZED,
        }
    }
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Equal digests, in time that does not depend on where they differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(difference) == 0
}

impl Control {
    /// A control surface with `secret` (none: everything refused) whose children run
    /// `program` (the agent's own executable).
    pub(crate) fn new(secret: Option<&str>, program: PathBuf) -> Self {
        Self {
            secret: secret.map(|s| digest(s.as_bytes())),
            program,
            children: Arc::new(Semaphore::new(MAX_CHILDREN)),
        }
    }

    /// Lets in a request whose `Authorization` header carries the secret.
    pub(crate) fn authorize(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let secret = self.secret.as_ref().ok_or(Refusal::Disabled)?;
        let offered = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .ok_or(Refusal::Missing)?;
        if same_digest(secret, &digest(offered)) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }

    /// Answers a request under [`PREFIX`].
    pub(crate) async fn answer<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Err(refusal) = self.authorize(request.headers()) {
            tracing::warn!("control request refused: {refusal}");
            let mut response = text(refusal.status(), format!("{refusal}\n"));
            if refusal == Refusal::Missing {
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return response;
        }
        let path = request.uri().path().to_owned();
        let known = matches!(
            path.as_str(),
            "/v1/control/pingpong/listen" | "/v1/control/pingpong/ping"
        );
        if !known {
            return text(StatusCode::NOT_FOUND, format!("no such path: {path}\n"));
        }
        if request.method() != Method::POST {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} takes POST\n"),
            );
            response
                .headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(err) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body (at most {MAX_BODY} bytes): {err}\n"),
                );
            }
        };
        let Ok(_slot) = self.children.clone().acquire_owned().await else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
        };
        let answer = if path.ends_with("/listen") {
            match serde_json::from_slice::<ListenRequest>(&body) {
                Ok(request) => self.listen(&request).await.map(|r| json(&r)),
                Err(err) => Err(ControlError::BadRequest(err.to_string())),
            }
        } else {
            match serde_json::from_slice::<PingRequest>(&body) {
                Ok(request) => self.ping(&request).await.map(|r| json(&r)),
                Err(err) => Err(ControlError::BadRequest(err.to_string())),
            }
        };
        answer.unwrap_or_else(|err| {
            let status = match err {
                ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
                ControlError::Child(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            text(status, format!("{err}\n"))
        })
    }

    /// Starts a listener child for `request.serve_for_secs` and answers its address. The
    /// child ends by itself then; the agent kills it a little later if it has not.
    async fn listen(&self, request: &ListenRequest) -> Result<ListenerReady, ControlError> {
        let serve_for = Duration::from_secs(request.serve_for_secs.unwrap_or(120));
        if serve_for.is_zero() || serve_for > MAX_SERVE_FOR {
            return Err(ControlError::BadRequest(format!(
                "serve_for_secs must be between 1 and {}",
                MAX_SERVE_FOR.as_secs()
            )));
        }
        let mut command = self.command(&request.provider, request.source.as_deref(), "listen");
        command
            .arg("--serve-for")
            .arg(serve_for.as_secs().to_string());
        if let Some(max) = request.max_message {
            command.arg("--max-message").arg(max.to_string());
        }
        if let Some(sessions) = request.sessions {
            command.arg("--sessions").arg(sessions.to_string());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ControlError::Child(format!("cannot start the listener: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| ControlError::Child("the listener has no standard output".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(LISTENER_START, lines.next_line()).await;
        let ready = match first {
            Ok(Ok(Some(line))) => serde_json::from_str::<ListenerReady>(&line).ok(),
            _ => None,
        };
        let Some(ready) = ready else {
            let _ = child.start_kill();
            let output = child
                .wait_with_output()
                .await
                .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
                .unwrap_or_default();
            return Err(ControlError::Child(format!(
                "the listener did not give its address: {}",
                if output.is_empty() {
                    "no output"
                } else {
                    &output
                }
            )));
        };
        tokio::spawn(async move {
            // Drains its output so that it never blocks, and bounds its life.
            let _lines = lines;
            if tokio::time::timeout(serve_for + Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                tracing::warn!("a fabric listener outlived its time: killed");
                let _ = child.kill().await;
            }
        });
        Ok(ready)
    }

    /// Pings a peer in a child and answers its report, whatever its outcome.
    async fn ping(&self, request: &PingRequest) -> Result<PingReport, ControlError> {
        let timeout = Duration::from_secs_f64(request.timeout_secs.unwrap_or(5.0).clamp(0.1, 60.0));
        let mut command = self.command(&request.provider, request.source.as_deref(), "ping");
        command
            .arg(&request.address)
            .arg("--json")
            .arg("--timeout")
            .arg(timeout.as_secs_f64().to_string());
        if let Some(sizes) = &request.sizes {
            let sizes: Vec<String> = sizes.iter().map(u64::to_string).collect();
            command.arg("--sizes").arg(sizes.join(","));
        }
        if let Some(iterations) = request.iterations {
            command.arg("--iterations").arg(iterations.to_string());
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ControlError::Child(format!("cannot start the ping: {e}")))?;
        // Every exchange is bounded by `timeout`; a ping of many large messages takes longer.
        let limit = timeout * 4 + Duration::from_secs(300);
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| ControlError::Child(format!("the ping ran past {} s", limit.as_secs())))?
            .map_err(|e| ControlError::Child(format!("the ping: {e}")))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<PingReport>(line.trim()).ok())
            .ok_or_else(|| {
                ControlError::Child(format!(
                    "the ping ({}) gave no report: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            })
    }

    fn command(&self, provider: &str, source: Option<&str>, mode: &str) -> Command {
        let mut command = Command::new(&self.program);
        command.args(["pingpong", mode, "--provider", provider]);
        if let Some(source) = source {
            command.arg("--source").arg(source);
        }
        command.stdin(Stdio::null());
        command
    }
}

/// Why a control request let in was not carried out.
#[derive(Debug, thiserror::Error)]
enum ControlError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("{0}")]
    Child(String),
}

fn json(body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string(body) {
        Ok(mut text) => {
            text.push('\n');
            respond(StatusCode::OK, "application/json", text)
        }
        Err(err) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialise the answer: {err}\n"),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body)
}

#[cfg(test)]
mod tests;
