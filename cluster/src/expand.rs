//! `${VAR}` in a cluster file's values, taken from the environment.
//!
//! Users wrote the seed's `cluster-efa.yaml` inside a shell heredoc so that the shell filled
//! in `${AWS_REGION}`, `${X86_AMI_ID}` and so on. rayefa does the same itself, with three
//! differences that make it safer than the heredoc:
//!
//! - only YAML values and keys are expanded, never comments (found with the YAML parser's
//!   events, so a `#` inside a quoted value is not mistaken for a comment);
//! - the command lists (`*_commands`) are left alone: they are shell run on the node, where
//!   `$RAY_HEAD_IP`, `$HOME` or `$PATH` mean the node's values, as in Ray's own files;
//! - a variable that is unset (or set but empty) is an error naming it and its line, where the
//!   shell would silently substitute nothing. `${VAR:-default}` gives a default;
//! - only the braced form is a reference: a bare `$Word` stays as written, because values such
//!   as EC2's `$Latest` and `$Default` launch-template versions must reach EC2 as they are.
//!   `$${` is a literal `${`.
//!
//! Each substituted value is escaped for the scalar's style, so a value containing `: ` or
//! `#` cannot change the document's structure.

use std::collections::BTreeMap;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};

/// Where a variable reference that could not be filled in sits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ExpandError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column of the scalar that holds the reference.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// The text with every reference outside command lists filled in from `env`.
///
/// A YAML syntax error is not reported here: the text is returned unchanged, so that the
/// deserializer reports the error at its original position.
pub fn expand(text: &str, env: &BTreeMap<String, String>) -> Result<String, ExpandError> {
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut path = PathTracker::default();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let Ok((event, span)) = next else {
            return Ok(text.to_owned());
        };
        match event {
            Event::Scalar(value, style, _, _) => {
                if !path.in_command_list()
                    && value.contains('$')
                    && let Some(edit) = expand_scalar(text, &value, style, &span, env)?
                {
                    edits.push(edit);
                }
                path.scalar(&value);
            }
            Event::Alias(_) => path.scalar(""),
            Event::MappingStart(..) => path.push(Frame::Mapping {
                expecting_key: true,
                key: None,
            }),
            Event::SequenceStart(..) => path.push(Frame::Sequence),
            Event::MappingEnd | Event::SequenceEnd => path.pop(),
            _ => {}
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, replacement) in edits {
        out.push_str(&text[at..start]);
        out.push_str(&replacement);
        at = end;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

/// One open collection while walking the events.
#[derive(Debug)]
enum Frame {
    Mapping {
        expecting_key: bool,
        key: Option<String>,
    },
    Sequence,
}

/// Knows which key each value sits under, to tell command lists apart.
#[derive(Debug, Default)]
struct PathTracker {
    frames: Vec<Frame>,
}

impl PathTracker {
    fn push(&mut self, frame: Frame) {
        self.frames.push(frame);
    }

    /// A collection ended; in its parent mapping it was a value, so a key comes next.
    fn pop(&mut self) {
        self.frames.pop();
        self.value_done();
    }

    /// A scalar (or alias) was read: a key or a value of the innermost collection.
    fn scalar(&mut self, text: &str) {
        if let Some(Frame::Mapping { expecting_key, key }) = self.frames.last_mut()
            && *expecting_key
        {
            *expecting_key = false;
            *key = Some(text.to_owned());
            return;
        }
        self.value_done();
    }

    fn value_done(&mut self) {
        if let Some(Frame::Mapping { expecting_key, .. }) = self.frames.last_mut() {
            *expecting_key = true;
        }
    }

    /// True inside the value of any `*_commands` key.
    fn in_command_list(&self) -> bool {
        self.frames.iter().any(|frame| {
            matches!(frame, Frame::Mapping { expecting_key: false, key: Some(key) }
                if key.ends_with("_commands"))
        })
    }
}

/// The edit (byte range and replacement) that fills in one scalar, if it has references.
fn expand_scalar(
    text: &str,
    value: &str,
    style: ScalarStyle,
    span: &Span,
    env: &BTreeMap<String, String>,
) -> Result<Option<(usize, usize, String)>, ExpandError> {
    let (Some(start), Some(end)) = (span.start.byte_offset(), span.end.byte_offset()) else {
        return Ok(None);
    };
    let Some(raw) = text.get(start..end) else {
        return Ok(None);
    };
    let at = |message: String| ExpandError {
        line: span.start.line(),
        column: span.start.col() + 1,
        message,
    };
    let escape: fn(&str) -> Option<String> = match style {
        ScalarStyle::Plain => plain_safe,
        ScalarStyle::DoubleQuoted => |v: &str| {
            let quoted = serde_json::to_string(v).ok()?;
            Some(quoted[1..quoted.len() - 1].to_owned())
        },
        ScalarStyle::SingleQuoted => |v: &str| (!v.contains('\n')).then(|| v.replace('\'', "''")),
        _ => |v: &str| (!v.contains('\n')).then(|| v.to_owned()),
    };
    match substitute(raw, env, escape).map_err(at)? {
        Substituted::Unchanged => Ok(None),
        Substituted::Text(expanded) => Ok(Some((start, end, expanded))),
        Substituted::NeedsQuoting => {
            // A value that cannot stand in this scalar's style as written: the whole scalar
            // becomes a double-quoted string, which can hold anything.
            match style {
                ScalarStyle::Plain | ScalarStyle::SingleQuoted => {
                    let expanded =
                        match substitute(value, env, |v| Some(v.to_owned())).map_err(at)? {
                            Substituted::Text(text) => text,
                            Substituted::Unchanged | Substituted::NeedsQuoting => value.to_owned(),
                        };
                    let quoted = serde_json::to_string(&expanded)
                        .map_err(|e| at(format!("cannot quote the expanded value: {e}")))?;
                    Ok(Some((start, end, quoted)))
                }
                _ => Err(at(
                    "a variable's value has a line break, which a block scalar cannot take; \
                     use a double-quoted value"
                        .to_owned(),
                )),
            }
        }
    }
}

/// What substituting one scalar's text gave.
enum Substituted {
    /// No reference in it.
    Unchanged,
    /// The text with every reference replaced.
    Text(String),
    /// A value cannot be written in this style.
    NeedsQuoting,
}

/// How to write a literal `${`, for messages.
const LITERAL_HINT: &str = "write $${ for a literal ${";

/// Replaces `${NAME}` and `${NAME:-default}` in `raw`, each value passed through `escape`
/// (which answers `None` when the value cannot be written as is), and `$${` with a literal
/// `${`. Every other `$` stays as written: EC2's `$Latest` and `$Default` launch-template
/// versions, `$5`, a `$HOME` meant for the node.
fn substitute(
    raw: &str,
    env: &BTreeMap<String, String>,
    escape: impl Fn(&str) -> Option<String>,
) -> Result<Substituted, String> {
    let mut out = String::with_capacity(raw.len());
    let mut changed = false;
    let mut rest = raw;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            changed = true;
            rest = tail;
            continue;
        }
        let Some(braced) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let close = braced
            .find('}')
            .ok_or_else(|| format!("`${{` without a closing `}}` in `{raw}` ({LITERAL_HINT})"))?;
        let inner = &braced[..close];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if !is_name(name) {
            return Err(format!(
                "`${{{inner}}}` is not a variable reference ({LITERAL_HINT})"
            ));
        }
        let value = match (env.get(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => value.as_str(),
            (None, Some(default)) => default,
            (None, None) if env.contains_key(name) => {
                return Err(format!(
                    "environment variable {name} is set but empty (write ${{{name}:-}} if empty \
                     is meant, or $${{{name}}} for a literal ${{{name}}})"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (write ${{{name}:-default}} for a \
                     default, or $${{{name}}} for a literal ${{{name}}})"
                ));
            }
        };
        match escape(value) {
            Some(escaped) => out.push_str(&escaped),
            None => return Ok(Substituted::NeedsQuoting),
        }
        changed = true;
        rest = &braced[close + 1..];
    }
    out.push_str(rest);
    Ok(if changed {
        Substituted::Text(out)
    } else {
        Substituted::Unchanged
    })
}

/// A shell variable name.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The value as is when it can sit inside a plain scalar without changing the document.
fn plain_safe(value: &str) -> Option<String> {
    let structural = value.contains(": ")
        || value.contains(" #")
        || value.ends_with(':')
        || value.contains('\n')
        || value.contains('\t')
        || value.trim() != value
        || value.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`".contains(c))
        || value.contains(|c: char| ",[]{}".contains(c));
    (!structural).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn fills_braced_and_bare_references_in_values() {
        let text = "cluster_name: ${NAME}-efa\nregion: ${REGION}\nzone: ${REGION}a\n";
        let out = expand(
            text,
            &env(&[("NAME", "ray-on-aws"), ("REGION", "ap-northeast-1")]),
        )
        .expect("expands");
        assert_eq!(
            out,
            "cluster_name: ray-on-aws-efa\nregion: ap-northeast-1\nzone: ap-northeast-1a\n"
        );
    }

    #[test]
    fn leaves_comments_and_command_lists_alone() {
        let text = "a: 1 # costs $5 and ${UNSET}\n# $UNSET\nsetup_commands:\n  - echo $HOME ${UNSET}\nnested:\n  worker_start_ray_commands: [\"ray start --address=$RAY_HEAD_IP:6379\"]\n";
        assert_eq!(expand(text, &env(&[])).expect("nothing to expand"), text);
    }

    #[test]
    fn an_unset_variable_names_itself_and_its_line() {
        let text = "a: 1\nprovider:\n  region: ${AWS_REGION}\n";
        let err = expand(text, &env(&[])).expect_err("unset");
        assert_eq!((err.line, err.column), (3, 11));
        assert!(
            err.message.contains("AWS_REGION is not set"),
            "{}",
            err.message
        );
    }

    #[test]
    fn an_empty_variable_is_an_error_unless_a_default_says_so() {
        let err = expand("a: ${EMPTY}\n", &env(&[("EMPTY", "")])).expect_err("empty");
        assert!(err.message.contains("set but empty"), "{}", err.message);
        assert_eq!(
            expand("a: x${EMPTY:-}y\n", &env(&[("EMPTY", "")])).expect("default"),
            "a: xy\n"
        );
        assert_eq!(
            expand("a: ${NOPE:-fallback}\n", &env(&[])).expect("default"),
            "a: fallback\n"
        );
    }

    #[test]
    fn values_are_escaped_for_the_scalar_style() {
        let vars = env(&[("V", "x: y # z"), ("Q", "say \"hi\"\\"), ("S", "it's")]);
        assert_eq!(
            expand("a: ${V}\n", &vars).expect("plain"),
            "a: \"x: y # z\"\n"
        );
        assert_eq!(
            expand("a: \"<${Q}>\"\n", &vars).expect("double"),
            "a: \"<say \\\"hi\\\"\\\\>\"\n"
        );
        assert_eq!(
            expand("a: '${S}'\n", &vars).expect("single"),
            "a: 'it''s'\n"
        );
        assert_eq!(
            expand("a: [\"${S}\"]\n", &vars).expect("flow"),
            "a: [\"it's\"]\n"
        );
    }

    #[test]
    fn plain_numbers_keep_their_type() {
        assert_eq!(
            expand("n: ${N}\n", &env(&[("N", "96")])).expect("n"),
            "n: 96\n"
        );
    }

    #[test]
    fn a_bare_dollar_word_stays_as_written_and_dollar_dollar_brace_is_a_literal_brace() {
        let vars = env(&[("Latest", "no"), ("HOME", "/root")]);
        for kept in [
            "Version: $Latest\n",
            "Version: '$Default'\n",
            "p: cost $5 and $$\n",
            "p: \"$HOME/x\"\n",
        ] {
            assert_eq!(expand(kept, &vars).expect("kept"), kept);
        }
        assert_eq!(
            expand("p: a$${HOME}b\n", &vars).expect("literal"),
            "p: a${HOME}b\n"
        );
        assert_eq!(
            expand("p: $${X}-${HOME}\n", &vars).expect("both"),
            "p: ${X}-/root\n"
        );
    }

    #[test]
    fn the_error_says_how_to_write_a_literal() {
        let unset = expand("a: ${Latest}\n", &env(&[])).expect_err("unset");
        assert_eq!(
            unset.message,
            "environment variable Latest is not set (write ${Latest:-default} for a default, or \
             $${Latest} for a literal ${Latest})"
        );
        let broken = expand("a: ${1x}\n", &env(&[])).expect_err("not a name");
        assert_eq!(
            broken.message,
            "`${1x}` is not a variable reference (write $${ for a literal ${)"
        );
    }

    #[test]
    fn a_broken_reference_is_reported() {
        let err = expand("a: ${OOPS\n", &env(&[])).expect_err("unclosed");
        assert!(err.message.contains("without a closing"), "{}", err.message);
    }

    #[test]
    fn a_syntax_error_leaves_the_rest_to_the_parser() {
        let text = "a: {b: $X\n";
        assert_eq!(expand(text, &env(&[("X", "1")])).expect("stops"), text);
    }
}
