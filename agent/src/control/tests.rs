use http_body_util::Empty;

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

fn headers(authorization: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("ascii"));
    }
    headers
}

fn control(secret: Option<&str>) -> Control {
    // The program is never run by these tests: refusals happen before any child starts.
    Control::new(secret, PathBuf::from("/nonexistent/rayefa-agent"))
}

#[test]
fn only_the_cluster_secret_as_a_bearer_token_is_let_in() {
    let control = control(Some(SECRET));
    assert_eq!(
        control.authorize(&headers(Some(&format!("Bearer {SECRET}")))),
        Ok(())
    );
    assert_eq!(control.authorize(&headers(None)), Err(Refusal::Missing));
    assert_eq!(
        control.authorize(&headers(Some(SECRET))),
        Err(Refusal::Missing),
        "a secret without the Bearer scheme"
    );
    for wrong in [
        "Bearer ",
        "Bearer 0123456789abcdef0123456789abcdef0123456789abcdeF",
        "Bearer 0123456789abcdef0123456789abcdef0123456789abcdef0",
        "Bearer 0123",
    ] {
        assert_eq!(
            control.authorize(&headers(Some(wrong))),
            Err(Refusal::Wrong),
            "{wrong}"
        );
    }
}

#[test]
fn without_a_configured_secret_nothing_is_let_in() {
    let control = control(None);
    assert_eq!(
        control.authorize(&headers(Some(&format!("Bearer {SECRET}")))),
        Err(Refusal::Disabled)
    );
    assert_eq!(control.authorize(&headers(None)), Err(Refusal::Disabled));
}

#[test]
fn digests_compare_equal_only_when_equal() {
    let a = digest(b"one");
    let mut b = a;
    assert!(same_digest(&a, &b));
    b[31] ^= 0x80;
    assert!(!same_digest(&a, &b));
}

async fn status_of(control: &Control, method: Method, path: &str, auth: Option<&str>) -> u16 {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(auth) = auth {
        request = request.header(AUTHORIZATION, auth);
    }
    let request = request.body(Empty::<Bytes>::new()).expect("request");
    control.answer(request).await.status().as_u16()
}

#[tokio::test]
async fn refusals_come_before_routing_and_reading() {
    let control = control(Some(SECRET));
    let right = format!("Bearer {SECRET}");
    let listen = "/v1/control/pingpong/listen";
    assert_eq!(status_of(&control, Method::POST, listen, None).await, 401);
    assert_eq!(
        status_of(&control, Method::POST, listen, Some("Bearer nope")).await,
        403
    );
    // Even unknown paths are refused without the secret, so they reveal nothing.
    assert_eq!(
        status_of(&control, Method::POST, "/v1/control/other", None).await,
        401
    );
    assert_eq!(
        status_of(&control, Method::POST, "/v1/control/other", Some(&right)).await,
        404
    );
    assert_eq!(
        status_of(&control, Method::GET, listen, Some(&right)).await,
        405
    );
    // An empty body is not a listen request.
    assert_eq!(
        status_of(&control, Method::POST, listen, Some(&right)).await,
        400
    );
}
