//! Message ids: UUIDv7 text, made without a system call per message.

/// A new message id: a UUIDv7 (time-ordered), as text. Its random bits come
/// from a fast thread-local generator, not a system call per message.
pub(crate) fn new_message_id(now_ms: i64) -> [u8; uuid::fmt::Hyphenated::LENGTH] {
    let random = fastrand::u128(..).to_le_bytes();
    let id = uuid::Builder::from_unix_timestamp_millis(
        now_ms.max(0) as u64,
        &[
            random[0], random[1], random[2], random[3], random[4], random[5], random[6], random[7],
            random[8], random[9],
        ],
    )
    .into_uuid();
    hyphenated(id.as_bytes())
}

/// `uuid` as lower-case hyphenated text (8-4-4-4-12), two digits per byte
/// from a table.
fn hyphenated(uuid: &[u8; 16]) -> [u8; uuid::fmt::Hyphenated::LENGTH] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    const PAIRS: [[u8; 2]; 256] = {
        let mut pairs = [[0; 2]; 256];
        let mut i = 0;
        while i < 256 {
            pairs[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
            i += 1;
        }
        pairs
    };
    let mut text = [b'-'; uuid::fmt::Hyphenated::LENGTH];
    let mut at = 0;
    for (i, byte) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at..at + 2].copy_from_slice(&PAIRS[usize::from(*byte)]);
        at += 2;
    }
    text
}
