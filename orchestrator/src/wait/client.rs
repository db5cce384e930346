//! Asking one agent for its health and status over HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use rayefa_wire::{DecodeError, MAX_STATUS_BYTES, StatusDocument};

/// Why an agent gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PollError {
    /// Nothing listens, or the network did not carry the request.
    #[error("no connection: {0}")]
    Connect(String),
    /// No answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An HTTP status other than the expected one.
    #[error("HTTP {0}")]
    Status(u16),
    /// The body is not a status document this orchestrator can use.
    #[error(transparent)]
    Document(#[from] DecodeError),
}

/// Decodes a `/v1/status` body: a status document of a version this orchestrator knows.
pub(crate) fn decode_status(body: &[u8]) -> Result<StatusDocument, PollError> {
    Ok(rayefa_wire::decode_status(body)?)
}

/// One HTTP client shared by every request, so that connections are reused across rounds.
#[derive(Debug, Clone)]
pub(crate) struct AgentClient {
    client: reqwest::Client,
    timeout: Duration,
}

impl AgentClient {
    /// A client whose every request gives up after `timeout`.
    pub(crate) fn new(timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Agents are on private or loopback addresses: a proxy from the environment
            // would only get in the way.
            .no_proxy()
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self { client, timeout })
    }

    /// `GET /v1/status`.
    pub(crate) async fn status(&self, agent: SocketAddr) -> Result<StatusDocument, PollError> {
        let response = self
            .client
            .get(format!("http://{agent}/v1/status"))
            .send()
            .await
            .map_err(|e| self.classify(&e))?;
        if !response.status().is_success() {
            return Err(PollError::Status(response.status().as_u16()));
        }
        let body = self.bounded_body(response).await?;
        decode_status(&body)
    }

    /// The response body, refused as soon as it is known to exceed [`MAX_STATUS_BYTES`]: by
    /// its `Content-Length`, or while it streams in without one.
    async fn bounded_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, PollError> {
        if let Some(length) = response.content_length()
            && length > MAX_STATUS_BYTES as u64
        {
            return Err(PollError::Document(DecodeError::TooLarge(MAX_STATUS_BYTES)));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(&e))? {
            if body.len() + chunk.len() > MAX_STATUS_BYTES {
                return Err(PollError::Document(DecodeError::TooLarge(MAX_STATUS_BYTES)));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// `GET /healthz`: the agent is up and serving.
    pub(crate) async fn healthz(&self, agent: SocketAddr) -> Result<(), PollError> {
        let response = self
            .client
            .get(format!("http://{agent}/healthz"))
            .send()
            .await
            .map_err(|e| self.classify(&e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(PollError::Status(response.status().as_u16()))
        }
    }

    fn classify(&self, error: &reqwest::Error) -> PollError {
        if error.is_timeout() {
            PollError::Timeout(self.timeout)
        } else {
            // The innermost cause says it best ("Connection refused (os error 111)").
            let mut cause: &dyn std::error::Error = error;
            while let Some(next) = cause.source() {
                cause = next;
            }
            PollError::Connect(cause.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document a real agent served (recorded for the fuzz seeds).
    const READY: &str = include_str!("../../../fuzz/seeds/status_document/ready.json");

    #[test]
    fn a_real_document_decodes() {
        let document = decode_status(READY.as_bytes()).expect("decodes");
        assert_eq!(document.state, rayefa_wire::NodeState::Ready);
    }

    #[test]
    fn a_body_over_the_limit_is_refused_whatever_it_holds() {
        let mut body = READY.as_bytes().to_vec();
        body.resize(MAX_STATUS_BYTES + 1, b' ');
        assert_eq!(
            decode_status(&body),
            Err(PollError::Document(DecodeError::TooLarge(MAX_STATUS_BYTES)))
        );
        body.truncate(MAX_STATUS_BYTES);
        assert!(
            decode_status(&body).is_ok(),
            "exactly the limit is accepted"
        );
    }

    /// Serves one HTTP answer of `body_bytes` spaces after `{`, without a length (chunked),
    /// and says how many bytes it managed to send.
    fn endless_agent(body_bytes: usize) -> (SocketAddr, std::thread::JoinHandle<usize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            // A client that stops reading leaves the writes blocked: give up after a while.
            let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                  transfer-encoding: chunked\r\n\r\n1\r\n{\r\n",
            );
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 1;
            while sent < body_bytes {
                let head = format!("{:x}\r\n", chunk.len());
                let wrote = stream
                    .write_all(head.as_bytes())
                    .and_then(|()| stream.write_all(&chunk))
                    .and_then(|()| stream.write_all(b"\r\n"));
                if wrote.is_err() {
                    break;
                }
                sent += chunk.len();
            }
            sent
        });
        (address, server)
    }

    #[tokio::test]
    async fn an_answer_that_streams_past_the_limit_is_cut_off() {
        let (address, server) = endless_agent(64 * MAX_STATUS_BYTES);
        let client = AgentClient::new(Duration::from_secs(10)).expect("client");
        assert_eq!(
            client.status(address).await,
            Err(PollError::Document(DecodeError::TooLarge(MAX_STATUS_BYTES)))
        );
        drop(client);
        // Joined off the runtime's thread, so that the runtime can close the connection.
        let sent = tokio::task::spawn_blocking(move || server.join().expect("server"))
            .await
            .expect("join");
        assert!(
            sent < 64 * MAX_STATUS_BYTES,
            "the whole {sent} bytes were read"
        );
    }

    /// Found by the status_document fuzz target: the error quoted a 1 KiB string whole.
    #[test]
    fn a_decoding_error_quotes_little_of_the_body() {
        let body = include_bytes!("../../../fuzz/seeds/status_document/long-string-error.json");
        let Err(PollError::Document(DecodeError::NotStatus(message))) = decode_status(body) else {
            panic!("decoded");
        };
        assert!(message.chars().count() < 200, "{message}");
        assert!(message.ends_with("at line 2 column 1159"), "{message}");
    }

    #[test]
    fn a_newer_document_and_junk_are_refused() {
        let newer = READY.replacen("\"api\": 1", "\"api\": 2", 1);
        assert_eq!(
            decode_status(newer.as_bytes()),
            Err(PollError::Document(DecodeError::NewerApi(2)))
        );
        assert!(matches!(
            decode_status(b"<html>502 Bad Gateway</html>"),
            Err(PollError::Document(DecodeError::NotStatus(_)))
        ));
    }
}
