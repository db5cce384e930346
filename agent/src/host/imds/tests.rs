//! The client against a stand-in metadata service on loopback that checks the token.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;

/// The token the stand-in hands out, with the final newline some servers add.
const TOKEN: &str = "imds-token-7\n";

/// The stand-in's base URL (with a final slash, as configuration may have it), and the token
/// lifetimes it was asked for.
async fn stand_in() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}/", listener.local_addr().expect("local address"));
    let ttls = Arc::new(Mutex::new(Vec::new()));
    let shared = ttls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let ttls = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let ttls = ttls.clone();
                    async move { Ok::<_, Infallible>(answer(&request, &ttls)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (base, ttls)
}

fn answer(request: &Request<Incoming>, ttls: &Mutex<Vec<String>>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: &str| {
        let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
        *response.status_mut() = status;
        response
    };
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = request.uri().path();
    if request.method() == Method::PUT && path == "/latest/api/token" {
        let Some(ttl) = header("x-aws-ec2-metadata-token-ttl-seconds") else {
            return reply(StatusCode::BAD_REQUEST, "");
        };
        ttls.lock().expect("recorder").push(ttl);
        return reply(StatusCode::OK, TOKEN);
    }
    if request.method() != Method::GET
        || header("x-aws-ec2-metadata-token").as_deref() != Some(TOKEN.trim())
    {
        return reply(StatusCode::UNAUTHORIZED, "");
    }
    match path {
        "/latest/meta-data/instance-id" => reply(StatusCode::OK, "  i-0123456789abcdef0\n"),
        "/latest/meta-data/network/interfaces/macs/" => {
            reply(StatusCode::OK, "0e:00:00:00:00:01/\n0e:00:00:00:00:02/\n")
        }
        _ => reply(StatusCode::NOT_FOUND, ""),
    }
}

#[tokio::test]
async fn a_session_carries_its_token_and_answers_come_trimmed() {
    let (base, ttls) = stand_in().await;
    let session = Imds::new(&base)
        .expect("a client")
        .session()
        .await
        .expect("a token");
    assert_eq!(
        session.get("instance-id").await.expect("an answer"),
        "i-0123456789abcdef0"
    );
    assert_eq!(
        session
            .get("network/interfaces/macs/")
            .await
            .expect("a list"),
        "0e:00:00:00:00:01/\n0e:00:00:00:00:02/"
    );
    assert_eq!(*ttls.lock().expect("recorder"), [TOKEN_TTL_SECS]);
}

#[tokio::test]
async fn an_error_status_is_an_error_that_carries_it() {
    let (base, _) = stand_in().await;
    let session = Imds::new(&base)
        .expect("a client")
        .session()
        .await
        .expect("a token");
    let err = session
        .get("iam/security-credentials/")
        .await
        .expect_err("nothing there");
    assert_eq!(err.status(), Some(reqwest::StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn nothing_listening_is_an_error_at_the_token() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let closed = listener.local_addr().expect("local address");
    drop(listener);
    let imds = Imds::new(&format!("http://{closed}")).expect("a client");
    assert!(imds.session().await.is_err());
}
