//! What each path answers.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use rayefa_wire::{NodeState, Readiness, StatusDocument};

use super::metrics::render_metrics;
use crate::engine::StatusBoard;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) fn answer<B>(request: &Request<B>, board: &StatusBoard) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let known = matches!(path, "/healthz" | "/readyz" | "/v1/status" | "/metrics");
    if !known {
        return respond(
            StatusCode::NOT_FOUND,
            TEXT,
            format!("no such path: {path}\n"),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            format!("{} is read-only: use GET\n", path),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let response = match path {
        "/healthz" => respond(StatusCode::OK, TEXT, "ok\n".to_owned()),
        "/readyz" => readiness(&board.snapshot()),
        "/v1/status" => json(StatusCode::OK, &board.snapshot()),
        _ => respond(
            StatusCode::OK,
            PROMETHEUS,
            render_metrics(&board.snapshot()),
        ),
    };
    if request.method() == Method::HEAD {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Full::new(Bytes::new()));
    }
    response
}

fn readiness(doc: &StatusDocument) -> Response<Full<Bytes>> {
    let reason = match &doc.state {
        NodeState::Ready => None,
        NodeState::Failed { step, reason } => Some(format!("step {step} failed: {reason}")),
        NodeState::Rebooting { step } => Some(format!("rebooting to finish {step}")),
        NodeState::Starting => Some("the agent is starting".to_owned()),
        NodeState::Bootstrapping => Some(match doc.current_step() {
            Some(step) => format!("step {} is {}", step.name, step.state.label()),
            None => "bootstrapping".to_owned(),
        }),
    };
    let body = Readiness {
        ready: reason.is_none(),
        state: doc.state.clone(),
        reason,
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &body)
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(body) {
        Ok(mut text) => {
            text.push('\n');
            respond(status, JSON, text)
        }
        Err(err) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            format!("cannot serialise the answer: {err}\n"),
        ),
    }
}

/// A response with `body` as `content_type`.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
