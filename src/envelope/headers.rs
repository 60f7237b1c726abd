//! [`Headers`]: a record's ordered list of name/value pairs, with the
//! names ([`Name`]) and values kept so that stamping the well-known ones
//! allocates nothing.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Record headers: an ordered list of name/value pairs, as in Kafka
/// (names may repeat; lookups return the last value). A value may be null,
/// as Kafka allows: it reads as empty and is written back as null.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub(super) Vec<(Name, Value)>);

/// A header name: a well-known one (a [`header`](super::header) constant, nothing
/// allocated) or any other.
#[derive(Clone)]
pub(crate) enum Name {
    Known(&'static str),
    Shared(Arc<str>),
}

impl Name {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Name::Known(name) => name,
            Name::Shared(name) => name,
        }
    }

    /// Whether this is `name`: by address for two well-known names.
    fn is(&self, name: &Name) -> bool {
        match (self, name) {
            (Name::Known(a), Name::Known(b)) if std::ptr::eq(*a, *b) => true,
            _ => self.as_str() == name.as_str(),
        }
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.is(other)
    }
}

impl Eq for Name {}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<N: Into<Arc<str>>> From<N> for Name {
    fn from(name: N) -> Name {
        Name::Shared(name.into())
    }
}

/// Room made for the first header: a published record's content type,
/// type name, message id and timestamp, and a few of its publisher's.
const FIRST_ROOM: usize = 8;

/// The longest header value kept inside the header list instead of in a
/// buffer of its own: room for a message id (36 bytes of UUID text).
pub(crate) const INLINE: usize = 38;

/// One header value. The short values the producer stamps on every record
/// (message id, timestamp) are inline, so stamping allocates nothing.
#[derive(Clone)]
pub(super) enum Value {
    Null,
    Shared(Bytes),
    Inline { len: u8, bytes: [u8; INLINE] },
}

impl Value {
    /// `value` copied inline when it fits, else into a buffer of its own.
    fn copied(value: &[u8]) -> Value {
        if value.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..value.len()].copy_from_slice(value);
            Value::Inline {
                len: value.len() as u8,
                bytes,
            }
        } else {
            Value::Shared(super::small::copy(value))
        }
    }

    fn get(&self) -> Option<&[u8]> {
        match self {
            Value::Null => None,
            Value::Shared(b) => Some(b),
            Value::Inline { len, bytes } => Some(&bytes[..usize::from(*len)]),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Value {}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            None => f.write_str("null"),
            Some(v) => fmt::Debug::fmt(&Bytes::copy_from_slice(v), f),
        }
    }
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// No headers, with room for `n`.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Headers(Vec::with_capacity(n))
    }

    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.get().unwrap_or_default())
    }

    /// Whether the last value of `name` is null (present, without a value).
    pub fn is_null(&self, name: &str) -> bool {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n.as_str() == name)
            .is_some_and(|(_, v)| matches!(v, Value::Null))
    }

    /// The last value of `name` as UTF-8 text (None if absent or not UTF-8).
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Sets `name` to `value`, replacing every earlier value.
    pub fn insert(&mut self, name: impl Into<Arc<str>>, value: impl Into<Bytes>) {
        self.set(name.into().into(), Value::Shared(value.into()));
    }

    fn set(&mut self, name: Name, value: Value) {
        if self.0.iter().any(|(n, _)| n.is(&name)) {
            self.0.retain(|(n, _)| !n.is(&name));
        }
        self.push(name, value);
    }

    /// Appends a pair; the first makes room for a published record's
    /// usual headers at once (the list does not grow header by header).
    #[inline]
    fn push(&mut self, name: Name, value: Value) {
        if self.0.capacity() == 0 {
            self.0.reserve_exact(FIRST_ROOM);
        }
        self.0.push((name, value));
    }

    /// Sets `name` to a copy of `value` (kept inline when short).
    pub(crate) fn insert_copy(&mut self, name: Name, value: &[u8]) {
        self.set(name, Value::copied(value));
    }

    /// Appends a value, keeping earlier ones.
    pub fn append(&mut self, name: impl Into<Arc<str>>, value: impl Into<Bytes>) {
        self.push(name.into().into(), Value::Shared(value.into()));
    }

    /// Appends a null value (a header without one), keeping earlier ones.
    pub fn append_null(&mut self, name: impl Into<Arc<str>>) {
        self.push(name.into().into(), Value::Null);
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n.as_str() != name);
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All pairs, in order (a null value reads as empty).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0
            .iter()
            .map(|(n, v)| (n.as_str(), v.get().unwrap_or_default()))
    }

    /// All pairs, in order, null values as `None`.
    pub(crate) fn iter_raw(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.get()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets a well-known header (a [`header`](super::header) constant) without allocating
    /// its name.
    pub(crate) fn insert_known(&mut self, name: &'static str, value: impl Into<Bytes>) {
        self.set(Name::Known(name), Value::Shared(value.into()));
    }

    /// Sets a well-known header to a copy of `value`, allocating nothing
    /// when the value is short (a timestamp).
    pub(crate) fn insert_known_copy(&mut self, name: &'static str, value: &[u8]) {
        self.set(Name::Known(name), Value::copied(value));
    }

    /// Appends `name` with a copy of `value` (kept inline when short) or,
    /// when given, the shared `long` bytes holding it: for a client that
    /// copies a record's long values into one buffer.
    pub(crate) fn append_from(&mut self, name: Name, value: Option<&[u8]>, long: Option<Bytes>) {
        let value = match (value, long) {
            (None, _) => Value::Null,
            (Some(_), Some(long)) => Value::Shared(long),
            (Some(v), None) => Value::copied(v),
        };
        self.push(name, value);
    }

    /// Appends a well-known header known to be absent, a copy of `value`,
    /// allocating nothing when the value is short (a message id).
    pub(crate) fn append_known_copy(&mut self, name: &'static str, value: &[u8]) {
        self.push(Name::Known(name), Value::copied(value));
    }

    /// Whether each of the well-known headers `names` is present, in one
    /// pass.
    pub(crate) fn has_known<const N: usize>(&self, names: [&'static str; N]) -> [bool; N] {
        let mut found = [false; N];
        for (name, _) in &self.0 {
            for (i, wanted) in names.iter().enumerate() {
                found[i] |= name.is(&Name::Known(wanted));
            }
        }
        found
    }

    /// Bytes taken by names and values.
    pub(crate) fn byte_size(&self) -> usize {
        self.0
            .iter()
            .map(|(n, v)| n.as_str().len() + v.get().map_or(0, <[u8]>::len))
            .sum()
    }
}

impl<N: Into<Arc<str>>, V: Into<Bytes>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(n, v)| (n.into().into(), Value::Shared(v.into())))
                .collect(),
        )
    }
}
