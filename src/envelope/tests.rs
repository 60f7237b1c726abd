//! Unit tests of the envelope: header lookups and copies, message ids.

use super::headers::Value;
use super::*;

#[test]
fn headers_last_wins_and_insert_replaces() {
    let mut h = Headers::new();
    h.append("a", "1");
    h.append("a", "2");
    assert_eq!(h.get_str("a"), Some("2"));
    h.insert("a", "3");
    assert_eq!(h.len(), 1);
    assert_eq!(h.get("a"), Some(&b"3"[..]));
    h.remove("a");
    assert!(h.is_empty());
    h.insert("bin", vec![0xff, 0xfe]);
    assert_eq!(h.get_str("bin"), None);
}

#[test]
fn message_ids_are_uuid_v7_text() {
    for _ in 0..1_000 {
        let text = new_message_id(1_764_662_400_123);
        let id = uuid::Uuid::parse_str(std::str::from_utf8(&text).unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.hyphenated().to_string().as_bytes(), &text[..]);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos), (1_764_662_400, 123_000_000));
    }
}

#[test]
fn copied_values_read_and_compare_as_their_bytes_whatever_their_length() {
    let short = b"1764662400000";
    let long = [b'x'; INLINE + 1];
    let mut copied = Headers::new();
    copied.append_known_copy(header::MESSAGE_ID, short);
    copied.insert_known_copy(header::TIMESTAMP, &long);
    assert!(matches!(copied.0[0].1, Value::Inline { .. }));
    assert!(matches!(copied.0[1].1, Value::Shared(_)));
    let mut shared = Headers::new();
    shared.append(header::MESSAGE_ID, short.to_vec());
    shared.append(header::TIMESTAMP, long.to_vec());
    assert_eq!(copied, shared);
    assert_eq!(copied.get(header::MESSAGE_ID), Some(&short[..]));
    assert_eq!(copied.byte_size(), shared.byte_size());
    copied.insert_known_copy(header::MESSAGE_ID, b"");
    assert_eq!(copied.get(header::MESSAGE_ID), Some(&b""[..]));
    assert!(!copied.is_null(header::MESSAGE_ID));
    copied.append_null("n");
    assert!(copied.is_null("n"));
    assert_ne!(copied.iter_raw().last(), Some(("n", Some(&b""[..]))));
}
