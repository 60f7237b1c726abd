//! Short byte strings copied for a record (a key, a payload, a header
//! value) without an allocation each: each thread copies them into a
//! buffer of its own, and each copy is a [`Bytes`] sharing that buffer,
//! which is freed once every copy in it is dropped.
//!
//! A copy keeps its whole buffer alive, so only short copies are made
//! here ([`MAX`]), and the buffers are small ([`CHUNK`]): a record kept
//! for long keeps at most a few KiB besides itself.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

/// The size of each thread's buffer.
const CHUNK: usize = 4096;
/// The longest copy made in the shared buffer; longer ones get their own.
pub(crate) const MAX: usize = 256;

thread_local! {
    static BUFFER: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `bytes` as a [`Bytes`] of its own.
#[inline]
pub(crate) fn copy(bytes: &[u8]) -> Bytes {
    if bytes.is_empty() {
        return Bytes::new();
    }
    if bytes.len() > MAX {
        return Bytes::copy_from_slice(bytes);
    }
    BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.capacity() - buffer.len() < bytes.len() {
                *buffer = BytesMut::with_capacity(CHUNK);
            }
            buffer.extend_from_slice(bytes);
            buffer.split().freeze()
        }
        Err(_) => Bytes::copy_from_slice(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_equal_and_independent() {
        let copies: Vec<Bytes> = (0..2_000u32)
            .map(|i| copy(format!("key-{i}").as_bytes()))
            .collect();
        for (i, c) in copies.iter().enumerate() {
            assert_eq!(&c[..], format!("key-{i}").as_bytes());
        }
        let long = vec![7u8; MAX + 1];
        assert_eq!(&copy(&long)[..], &long[..]);
        assert!(copy(b"").is_empty());
    }

    #[test]
    fn a_copy_outlives_its_thread() {
        let copied = std::thread::spawn(|| copy(b"kept")).join().unwrap();
        assert_eq!(&copied[..], b"kept");
    }
}
