//! Dead-letter records: the original bytes, with why and where from in headers.

use rdkafka::message::{Header, OwnedHeaders};

/// Header names on dead-lettered records.
pub mod headers {
    /// Human-readable reason.
    pub const REASON: &str = "salve.error.reason";
    /// Stable code, e.g. `missing_field`.
    pub const CODE: &str = "salve.error.code";
    /// Topic the message came from.
    pub const TOPIC: &str = "salve.source.topic";
    /// Its partition.
    pub const PARTITION: &str = "salve.source.partition";
    /// Its offset.
    pub const OFFSET: &str = "salve.source.offset";
    /// Set when the payload was cut to `topics.dead_letter_max_bytes`: the original size.
    pub const ORIGINAL_SIZE: &str = "salve.original.size";
}

/// Longest key kept on a dead letter; a longer one is cut, so the record still fits.
pub const MAX_KEY_BYTES: usize = 4096;
/// Longest reason header kept.
pub const MAX_REASON_BYTES: usize = 1024;

/// Where a dead-lettered message came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Builds the headers and the payload to publish for a message that could not be read.
pub fn record<'p>(
    payload: &'p [u8],
    code: &str,
    reason: &str,
    source: Source<'_>,
    max_bytes: usize,
) -> (OwnedHeaders, &'p [u8]) {
    let partition = source.partition.to_string();
    let offset = source.offset.to_string();
    let reason = truncate_utf8(reason, MAX_REASON_BYTES);
    let mut headers = OwnedHeaders::new_with_capacity(6)
        .insert(Header {
            key: headers::REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: headers::CODE,
            value: Some(code),
        })
        .insert(Header {
            key: headers::TOPIC,
            value: Some(source.topic),
        })
        .insert(Header {
            key: headers::PARTITION,
            value: Some(&partition),
        })
        .insert(Header {
            key: headers::OFFSET,
            value: Some(&offset),
        });
    let kept = if payload.len() > max_bytes {
        let size = payload.len().to_string();
        headers = headers.insert(Header {
            key: headers::ORIGINAL_SIZE,
            value: Some(&size),
        });
        &payload[..max_bytes]
    } else {
        payload
    };
    (headers, kept)
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
