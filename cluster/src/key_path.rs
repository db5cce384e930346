//! The dotted key path (`available_node_types.worker.min_workers`) of a position in a YAML
//! text, so that an error of the deserializer, which knows only a line and a column, can name
//! the key the user wrote.

use serde_saphyr::granit_parser::{Event, Parser};

/// What sits at a position: a key of a mapping, or a value (a scalar or a collection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// The dotted path of the node; empty for the document itself.
    pub(crate) path: String,
    /// True when the node is a mapping's key (its path then ends with that key).
    pub(crate) is_key: bool,
    /// The scalar's text, for scalars.
    pub(crate) scalar: Option<String>,
}

impl Node {
    /// The path of the mapping a key belongs to, or the path of a value.
    pub(crate) fn container(&self) -> String {
        if !self.is_key {
            return self.path.clone();
        }
        match self.path.rfind(['.', '[']) {
            Some(at) => self.path[..at].to_owned(),
            None => String::new(),
        }
    }
}

/// Which node to prefer when a key and a collection start at the same place (the first key of
/// a block mapping starts where the mapping does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefer {
    /// The outermost node there (a collection rather than its first key).
    Outer,
    /// The innermost node there (a key rather than the collection it opens).
    Inner,
}

/// The node at 1-based `line` and `column` in `text`, else the last node that starts before
/// it; `None` when the text does not parse up to there.
pub(crate) fn at(text: &str, line: u64, column: u64, prefer: Prefer) -> Option<Node> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut before: Option<Node> = None;
    let mut exact: Option<Node> = None;
    let mut parser = Parser::new_from_str(text);
    while let Some(Ok((event, span))) = parser.next_event() {
        let here = (span.start.line() as u64, span.start.col() as u64 + 1);
        let scalar = match &event {
            Event::Scalar(value, ..) => Some(value.to_string()),
            Event::Alias(_) | Event::MappingStart(..) | Event::SequenceStart(..) => None,
            Event::MappingEnd | Event::SequenceEnd => {
                frames.pop();
                value_done(&mut frames);
                continue;
            }
            _ => continue,
        };
        if here > (line, column) {
            break;
        }
        let node = node_here(&frames, scalar.as_deref());
        match &event {
            Event::MappingStart(..) => frames.push(Frame::Mapping {
                path: node.path.clone(),
                key: None,
            }),
            Event::SequenceStart(..) => frames.push(Frame::Sequence {
                path: node.path.clone(),
                index: 0,
            }),
            _ => record_scalar(&mut frames, &node),
        }
        if here == (line, column) && (exact.is_none() || prefer == Prefer::Inner) {
            exact = Some(node.clone());
        }
        before = Some(node);
    }
    exact.or(before)
}

/// One open collection and where its next node goes.
#[derive(Debug)]
enum Frame {
    /// A mapping; `key` is the key whose value comes next, `None` while a key is awaited.
    Mapping { path: String, key: Option<String> },
    /// A sequence and the index of its next item.
    Sequence { path: String, index: usize },
}

/// The node an event opens, given the open collections.
fn node_here(frames: &[Frame], scalar: Option<&str>) -> Node {
    let join = |parent: &str, key: &str| {
        if parent.is_empty() {
            key.to_owned()
        } else {
            format!("{parent}.{key}")
        }
    };
    let (path, is_key) = match frames.last() {
        None => (String::new(), false),
        Some(Frame::Mapping { path, key: None }) => (join(path, scalar.unwrap_or("?")), true),
        Some(Frame::Mapping {
            path,
            key: Some(key),
        }) => (join(path, key), false),
        Some(Frame::Sequence { path, index }) => (format!("{path}[{index}]"), false),
    };
    Node {
        path,
        is_key,
        scalar: scalar.map(str::to_owned),
    }
}

/// A scalar or alias was read: it was a key, or a value that completes an entry.
fn record_scalar(frames: &mut [Frame], node: &Node) {
    if node.is_key
        && let Some(Frame::Mapping { key, .. }) = frames.last_mut()
    {
        *key = Some(node.scalar.clone().unwrap_or_else(|| "?".to_owned()));
        return;
    }
    value_done(frames);
}

/// A value ended: its mapping awaits a key, its sequence the next item.
fn value_done(frames: &mut [Frame]) {
    match frames.last_mut() {
        Some(Frame::Mapping { key, .. }) => *key = None,
        Some(Frame::Sequence { index, .. }) => *index += 1,
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "cluster_name: c\nprovider: {type: local}\navailable_node_types:\n  \
                        worker:\n    node_config: {}\n    min_workers: -1\n    labels: [a, b]\n\
                        setup_commands:\n  - echo one\n  - echo two\n";

    fn path(line: u64, column: u64, prefer: Prefer) -> Node {
        at(TEXT, line, column, prefer).expect("a node")
    }

    #[test]
    fn values_keys_and_list_items_have_their_paths() {
        let value = path(6, 18, Prefer::Outer);
        assert_eq!(value.path, "available_node_types.worker.min_workers");
        assert!(!value.is_key);
        assert_eq!(value.scalar.as_deref(), Some("-1"));
        let key = path(6, 5, Prefer::Outer);
        assert_eq!(
            (key.path.as_str(), key.is_key),
            ("available_node_types.worker.min_workers", true)
        );
        assert_eq!(key.container(), "available_node_types.worker");
        assert_eq!(path(10, 5, Prefer::Outer).path, "setup_commands[1]");
        assert_eq!(
            path(7, 17, Prefer::Outer).path,
            "available_node_types.worker.labels[1]"
        );
        assert_eq!(path(2, 18, Prefer::Outer).path, "provider.type");
    }

    #[test]
    fn where_a_block_mapping_and_its_first_key_start_the_preference_decides() {
        assert_eq!(
            path(5, 5, Prefer::Outer).path,
            "available_node_types.worker"
        );
        assert_eq!(
            path(5, 5, Prefer::Inner).path,
            "available_node_types.worker.node_config"
        );
    }

    #[test]
    fn a_top_level_key_belongs_to_the_document() {
        let key = path(1, 1, Prefer::Inner);
        assert_eq!(
            (key.path.as_str(), key.container().as_str()),
            ("cluster_name", "")
        );
    }
}
