//! The headers of a record librdkafka hands over, read without trusting
//! their names to be UTF-8.
//!
//! rdkafka's own reader (`Headers::try_get`) unwraps the conversion of a
//! header name to `&str`: a record whose header name is not UTF-8 (the
//! protocol does not check; any C client can write one) panicked on the
//! consumer's polling thread, and with every restart again, wedging the
//! subscription. Here a name is read as bytes; one that is not UTF-8 is
//! read as the Java client reads it, each invalid sequence replaced by
//! U+FFFD.

#![allow(unsafe_code)]

use std::ffi::CStr;

use rdkafka::bindings as rdsys;

/// A header as librdkafka holds it: name (bytes, not checked to be
/// UTF-8) and value (None: null).
pub(super) type RawHeader<'m> = (&'m [u8], Option<&'m [u8]>);

/// Appends the headers of message `m`, in order, to `out`.
///
/// # Safety
/// `m` is a live message, and outlives `'m`.
pub(super) unsafe fn read_headers<'m>(
    m: *mut rdsys::rd_kafka_message_t,
    out: &mut impl Extend<RawHeader<'m>>,
) {
    let mut headers: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m` is live (the caller's contract); librdkafka sets
    // `headers` to the message's own header list (or leaves it null when
    // there is none), which lives as long as the message and is not
    // changed while we read it.
    let err = unsafe { rdsys::rd_kafka_message_headers(m, &mut headers) };
    if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return;
    }
    // SAFETY: `headers` is the message's valid header list (above).
    let count = unsafe { rdsys::rd_kafka_header_cnt(headers) };
    out.extend((0..count).filter_map(|i| {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
        // SAFETY: `i` is below the count; librdkafka points `name` at the
        // header's NUL-terminated name and `value` at its value of `size`
        // bytes (null for a null value), both owned by the list, which
        // outlives `'m` (above).
        let err =
            unsafe { rdsys::rd_kafka_header_get_all(headers, i, &mut name, &mut value, &mut size) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            return None;
        }
        // SAFETY: as above; the borrow is tied to the message.
        let name: &'m CStr = unsafe { CStr::from_ptr(name) };
        let value: Option<&'m [u8]> = (!value.is_null())
            // SAFETY: `value` points at `size` bytes owned by the list.
            .then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) });
        Some((name.to_bytes(), value))
    }));
}
