//! The decoder of `/v1/status` answers that the orchestrator's poller uses (`rayefa_wire`):
//! the one input the orchestrator takes from the network, on any bytes, with its size limit.
//!
//! Properties: nothing panics; a body over the limit is refused whatever it holds (checked by
//! padding inputs that start with `{` past the limit with whitespace, which keeps JSON valid).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rayefa_wire::{MAX_STATUS_BYTES, decode_status};

/// Decodes `body` with the function the orchestrator's poller uses (size limit included):
/// `Ok` holds the node's overall state as the document spells it, `Err` the message.
fn decode_status_body(body: &[u8]) -> Result<String, String> {
    decode_status(body)
        .map(|document| format!("{:?}", document.state))
        .map_err(|e| e.to_string())
}

fuzz_target!(|data: &[u8]| {
    let decoded = decode_status_body(data);
    if data.first() == Some(&b'{') && data.len() % 16 == 0 {
        let mut padded = data.to_vec();
        padded.resize(MAX_STATUS_BYTES + 1, b' ');
        let oversized = decode_status_body(&padded);
        assert!(
            oversized.as_ref().is_err_and(|e| e.contains("too large")),
            "a body over the limit was not refused as too large: {oversized:?}"
        );
    }
    if let Err(message) = decoded {
        assert!(
            message.len() < 1024,
            "an unbounded error message: {message}"
        );
    }
});
