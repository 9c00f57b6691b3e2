//! A table's `WITH (...)` options, with typed getters whose errors name the option.

use std::collections::BTreeMap;
use std::fmt;

use tidewater_core::{Error, Result};

/// Options of one table. `Debug` hides values of keys that look secret.
#[derive(Clone, Default)]
pub struct TableOptions {
    table: String,
    values: BTreeMap<String, String>,
}

impl fmt::Debug for TableOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.values {
            m.entry(k, &if is_secret(k) { "****" } else { v.as_str() });
        }
        m.finish()
    }
}

/// True for option names whose values must never be printed.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "sasl.jaas",
        "token",
        "credential",
        "key.pem",
    ]
    .iter()
    .any(|s| k.contains(s))
}

impl TableOptions {
    /// Options of table `table`.
    pub fn new(table: impl Into<String>, values: BTreeMap<String, String>) -> Self {
        Self {
            table: table.into(),
            values,
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// All options, for validation.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// An error about `key` of this table.
    pub fn error(&self, key: &str, message: impl Into<String>) -> Error {
        Error::config(format!("table '{}', option '{key}'", self.table), message)
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value of a required option.
    pub fn required(&self, key: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| self.error(key, "is required"))
    }

    /// A parsed option or its default.
    pub fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| {
                self.error(
                    key,
                    format!("'{v}' is not a valid {}", std::any::type_name::<T>()),
                )
            }),
        }
    }

    /// A boolean option ('true' / 'false').
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" => Ok(true),
            Some(v) if v == "false" => Ok(false),
            Some(v) => Err(self.error(key, format!("'{v}' is not 'true' or 'false'"))),
        }
    }

    /// One of `allowed` (case-insensitive), or `default` when absent.
    pub fn choice_or(&self, key: &str, allowed: &[&str], default: &str) -> Result<String> {
        let v = self.get(key).unwrap_or(default).trim().to_ascii_lowercase();
        if allowed.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(self.error(
                key,
                format!("'{v}' is not supported; use one of: {}", allowed.join(", ")),
            ))
        }
    }
}

/// Edit distance, for "did you mean" hints.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `candidates` to `word`, if close enough to be a typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_option_names() {
        assert_eq!(suggest("pth", ["path", "format"]), Some("path"));
        assert_eq!(
            suggest("csv.feld-delimiter", ["csv.field-delimiter", "path"]),
            Some("csv.field-delimiter")
        );
        assert_eq!(suggest("zzzzzz", ["path", "format"]), None);
    }

    #[test]
    fn debug_hides_secrets() {
        let mut m = BTreeMap::new();
        m.insert(
            "properties.sasl.password".to_string(),
            "hunter2".to_string(),
        );
        m.insert("path".to_string(), "/tmp/x".to_string());
        let s = format!("{:?}", TableOptions::new("t", m));
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("/tmp/x"));
    }
}
