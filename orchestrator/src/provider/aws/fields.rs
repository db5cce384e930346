//! A reader over one mapping of a `node_config` that knows the YAML path of every value, so
//! every mistake names where it is, and that refuses keys nobody asked for.

use serde_json::{Map, Value};

/// A mistake in a `node_config`, at a YAML path such as
/// `available_node_types.worker.node_config.NetworkInterfaces[0].InterfaceType`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub(crate) struct NodeConfigError {
    /// Where the mistake is.
    pub(crate) path: String,
    /// What is wrong and how to fix it.
    pub(crate) message: String,
}

impl NodeConfigError {
    /// A mistake at `path`.
    pub(crate) fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Results of reading a `node_config`.
pub(crate) type Result<T> = std::result::Result<T, NodeConfigError>;

/// One mapping being read.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// Starts reading `value`, which must be a mapping, found at `path`.
    pub(crate) fn of(value: &'a Value, path: String) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Self {
                path,
                map,
                known: Vec::new(),
            }),
            other => Err(NodeConfigError::at(
                path,
                format!("expected a mapping, found {}", describe(other)),
            )),
        }
    }

    /// The path of `key` in this mapping.
    pub(crate) fn path_of(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// Marks `key` as understood and returns its value unless it is absent or null.
    fn take(&mut self, key: &'static str) -> Option<(&'a Value, String)> {
        self.known.push(key);
        self.map
            .get(key)
            .filter(|value| !value.is_null())
            .map(|value| (value, self.path_of(key)))
    }

    /// Refuses `key` when it is present: rayefa sets it itself, and `why` says how.
    pub(crate) fn reserved(&mut self, key: &'static str, why: &str) -> Result<()> {
        match self.take(key) {
            Some((_, path)) => Err(NodeConfigError::at(path, why)),
            None => Ok(()),
        }
    }

    /// A string; numbers are taken as their text (`Version: 2`, `MaxPrice: 0.5`).
    pub(crate) fn string(&mut self, key: &'static str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some((value, path)) => as_string(value, &path).map(Some),
        }
    }

    /// A 32-bit integer.
    pub(crate) fn int(&mut self, key: &'static str) -> Result<Option<i32>> {
        match self.take(key) {
            None => Ok(None),
            Some((Value::Number(n), path)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| NodeConfigError::at(path, format!("`{n}` is not an integer"))),
            Some((other, path)) => Err(expected(&path, "an integer", other)),
        }
    }

    /// `true` or `false`.
    pub(crate) fn boolean(&mut self, key: &'static str) -> Result<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some((Value::Bool(b), _)) => Ok(Some(*b)),
            Some((other, path)) => Err(expected(&path, "true or false", other)),
        }
    }

    /// One of the words in `allowed`, converted to the SDK's enum.
    pub(crate) fn choice<T>(&mut self, key: &'static str, allowed: &[&str]) -> Result<Option<T>>
    where
        T: for<'s> From<&'s str>,
    {
        let Some(word) = self.string(key)? else {
            return Ok(None);
        };
        if allowed.contains(&word.as_str()) {
            Ok(Some(T::from(word.as_str())))
        } else {
            Err(NodeConfigError::at(
                self.path_of(key),
                format!("`{word}` is not one of: {}", allowed.join(", ")),
            ))
        }
    }

    /// A list of strings; a single string counts as a list of one.
    pub(crate) fn strings(&mut self, key: &'static str) -> Result<Option<Vec<String>>> {
        match self.take(key) {
            None => Ok(None),
            Some((Value::Array(items), path)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| as_string(item, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some((value @ Value::String(_), path)) => Ok(Some(vec![as_string(value, &path)?])),
            Some((other, path)) => Err(expected(&path, "a list of strings", other)),
        }
    }

    /// A nested mapping, read by `read`; its unknown keys are refused.
    pub(crate) fn object<T>(
        &mut self,
        key: &'static str,
        read: impl FnOnce(&mut Fields<'a>) -> Result<T>,
    ) -> Result<Option<T>> {
        let Some((value, path)) = self.take(key) else {
            return Ok(None);
        };
        let mut fields = Fields::of(value, path)?;
        let result = read(&mut fields)?;
        fields.finish()?;
        Ok(Some(result))
    }

    /// A list of mappings, each read by `read`; their unknown keys are refused.
    pub(crate) fn objects<T>(
        &mut self,
        key: &'static str,
        mut read: impl FnMut(&mut Fields<'a>) -> Result<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some((value, path)) = self.take(key) else {
            return Ok(None);
        };
        let Value::Array(items) = value else {
            return Err(expected(&path, "a list", value));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let mut fields = Fields::of(item, format!("{path}[{i}]"))?;
            out.push(read(&mut fields)?);
            fields.finish()?;
        }
        Ok(Some(out))
    }

    /// Refuses the keys no reader asked for, suggesting the key that was probably meant.
    pub(crate) fn finish(&self) -> Result<()> {
        for key in self.map.keys() {
            if self.known.iter().any(|known| known == key) {
                continue;
            }
            let hint = closest(key, &self.known)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            return Err(NodeConfigError::at(
                self.path_of(key),
                format!("unknown key: RunInstances takes no `{key}` here{hint}"),
            ));
        }
        Ok(())
    }
}

fn as_string(value: &Value, path: &str) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(expected(path, "a string", other)),
    }
}

fn expected(path: &str, what: &str, found: &Value) -> NodeConfigError {
    NodeConfigError::at(path, format!("expected {what}, found {}", describe(found)))
}

/// A value's kind in words, as a YAML author thinks of it.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_owned(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string `{s}`"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}

/// The known key nearest to `key`: the same but for case, or at most two edits away.
fn closest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    if let Some(same) = known.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        return Some(same);
    }
    known
        .iter()
        .map(|k| {
            (
                edit_distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Levenshtein distance between two short words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_keys_name_their_path_and_the_likely_key() {
        let value = json!({"DeviceIndex": 0, "interfaceType": "efa"});
        let mut fields = Fields::of(&value, "x.NetworkInterfaces[0]".into()).expect("mapping");
        assert_eq!(fields.int("DeviceIndex").expect("int"), Some(0));
        assert_eq!(fields.string("InterfaceType").expect("absent"), None);
        let error = fields.finish().expect_err("unknown key");
        assert_eq!(error.path, "x.NetworkInterfaces[0].interfaceType");
        assert!(
            error.message.contains("did you mean `InterfaceType`"),
            "{error}"
        );
    }

    #[test]
    fn wrong_types_say_what_was_expected_and_found() {
        let value = json!({"VolumeSize": "big", "Encrypted": "yes"});
        let mut fields = Fields::of(&value, "bdm".into()).expect("mapping");
        let error = fields.int("VolumeSize").expect_err("not an int");
        assert_eq!(
            error.to_string(),
            "bdm.VolumeSize: expected an integer, found the string `big`"
        );
        let error = fields.boolean("Encrypted").expect_err("not a bool");
        assert!(error.message.contains("true or false"), "{error}");
    }

    #[test]
    fn choices_list_the_allowed_words() {
        let value = json!({"VolumeType": "GP3"});
        let mut fields = Fields::of(&value, "ebs".into()).expect("mapping");
        let error = fields
            .choice::<String>("VolumeType", &["gp2", "gp3"])
            .expect_err("wrong case");
        assert_eq!(error.message, "`GP3` is not one of: gp2, gp3");
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("subnetid", "subnetid"), 0);
        assert_eq!(edit_distance("subnetd", "subnetid"), 1);
        assert_eq!(edit_distance("groups", "group"), 1);
        assert_eq!(closest("Grups", &["Groups", "SubnetId"]), Some("Groups"));
        assert_eq!(closest("Zebra", &["Groups", "SubnetId"]), None);
    }
}
