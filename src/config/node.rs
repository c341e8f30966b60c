//! A YAML document as a tree of spanned nodes, parsed by serde-saphyr; YAML syntax errors.
//!
//! Every node and every mapping key carries its `Location` (via
//! `serde_saphyr::Spanned`), so later stages can name `file:line:col` exactly.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Spanned, UserMessageFormatter};

use super::error::{snippet, ConfigError, Diagnostic};

/// A parsed YAML node with resolved scalar types.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    /// Human name of the node's type, for "expected X, found Y" messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "nothing (null)",
            Node::Bool(_) => "a boolean",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Node, E> {
        i128::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// One source file: its display name and text.
#[derive(Clone, Copy)]
pub(crate) struct Doc<'a> {
    pub origin: &'a str,
    pub text: &'a str,
}

impl Doc<'_> {
    /// A diagnostic at `loc` with a source snippet.
    pub(crate) fn diag(&self, loc: &Location, key: Option<&str>, message: String) -> Diagnostic {
        let (line, column) = if loc.line() == 0 {
            (1, 1)
        } else {
            (loc.line(), loc.column())
        };
        Diagnostic {
            origin: self.origin.to_owned(),
            line,
            column,
            key: key.map(str::to_owned),
            message,
            snippet: snippet(self.text, line, column),
        }
    }

    /// The exact source text of a scalar (used when a number or boolean is read as a string).
    pub(crate) fn raw(&self, node: &Spanned<Node>) -> Option<&str> {
        let span = node.defined.span();
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        self.text.get(start..start.checked_add(len)?)
    }

    /// Parses the whole document into a node tree.
    pub(crate) fn parse(&self) -> Result<Spanned<Node>, ConfigError> {
        let mut options = serde_saphyr::Options::default();
        // Keep `0755` and `1_000` as written when they end up in string settings.
        options.leading_zero_numbers_as_strings = true;
        options.underscored_numbers_as_strings = true;
        serde_saphyr::from_str_with_options::<Spanned<Node>>(self.text, options)
            .map_err(|err| ConfigError::Syntax(self.yaml_error(&err)))
    }

    fn yaml_error(&self, err: &serde_saphyr::Error) -> Diagnostic {
        let inner = err.without_snippet();
        let message: String = UserMessageFormatter
            .format_message(inner)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let message = match message.split_once(", set DuplicateKeyPolicy") {
            Some((head, _)) => head.to_owned(),
            None => message,
        };
        match err.location() {
            Some(loc) => self.diag(&loc, None, format!("invalid YAML: {message}")),
            None => self.diag(&Location::UNKNOWN, None, format!("invalid YAML: {message}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_carry_lines() {
        let doc = Doc {
            origin: "t.yaml",
            text: "a:\n  b: 1\n  c: [x, 'y']\n",
        };
        let root = doc.parse().unwrap_or_else(|e| panic!("{e}"));
        let Node::Map(top) = &root.value else {
            panic!("not a map")
        };
        let (key_a, value_a) = &top[0];
        assert_eq!((key_a.value.as_str(), key_a.referenced.line()), ("a", 1));
        let Node::Map(inner) = &value_a.value else {
            panic!("not a map")
        };
        assert_eq!(inner[0].1.value, Node::Int(1));
        assert_eq!(inner[0].1.referenced.line(), 2);
        assert_eq!(doc.raw(&inner[0].1), Some("1"));
        assert_eq!(inner[1].0.referenced.line(), 3);
    }

    #[test]
    fn syntax_errors_are_located() {
        let doc = Doc {
            origin: "bad.yaml",
            text: "a: 1\na: 2\n",
        };
        let err = doc.parse().map(|_| ()).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("bad.yaml:2:1: invalid YAML: duplicate"),
            "{shown}"
        );
        assert!(!shown.contains("DuplicateKeyPolicy"), "{shown}");
    }
}
