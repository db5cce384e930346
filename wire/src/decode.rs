//! Reading a status document from whatever answered at an agent's address: bounded in size,
//! of a version this reader knows, with errors that quote a bounded part of the input.

use crate::{API_VERSION, StatusDocument};

/// The largest status body read. An agent's document is a few tens of KiB (each step's output
/// tail is capped at 4 KiB); whatever answers at a node's address is not trusted to be an
/// agent, and must not make the reader buffer without end.
pub const MAX_STATUS_BYTES: usize = 1 << 20;

/// The most characters of a decoding error shown: serde_json quotes the offending value
/// whole, and whatever answers may send a value of a megabyte.
const MAX_ERROR_CHARS: usize = 160;

/// Why a body is not a status document this reader can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not a status document.
    #[error("not a status document: {0}")]
    NotStatus(String),
    /// The agent speaks a newer status document than this reader knows.
    #[error("status document version {0} is newer than this rayefa understands ({API_VERSION})")]
    NewerApi(u32),
    /// The body is larger than any status document an agent writes.
    #[error("the answer is larger than {0} bytes, too large for a status document")]
    TooLarge(usize),
}

/// Decodes a `/v1/status` body: a status document of a version this reader knows, of at most
/// [`MAX_STATUS_BYTES`].
pub fn decode_status(body: &[u8]) -> Result<StatusDocument, DecodeError> {
    if body.len() > MAX_STATUS_BYTES {
        return Err(DecodeError::TooLarge(MAX_STATUS_BYTES));
    }
    let document: StatusDocument =
        serde_json::from_slice(body).map_err(|e| DecodeError::NotStatus(short_json_error(&e)))?;
    if document.api > API_VERSION {
        return Err(DecodeError::NewerApi(document.api));
    }
    Ok(document)
}

/// serde_json's message, its quote of the input cut short, its position kept.
fn short_json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if text.chars().count() <= MAX_ERROR_CHARS {
        return text;
    }
    let start: String = text.chars().take(MAX_ERROR_CHARS).collect();
    format!(
        "{start}… at line {} column {}",
        error.line(),
        error.column()
    )
}
