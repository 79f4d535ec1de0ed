//! Header-level CBOR reading and writing on top of `ciborium-ll`, shared by the BPv7 codec and
//! the frame codec.
//!
//! Both codecs need what serde cannot give: the byte offset of every item (a block's CRC covers
//! its exact received bytes) and indefinite-length arrays. The [`Reader`] checks every announced
//! length against the bytes actually left in the input before it allocates, so a short input
//! can never make it reserve more memory than its own size. It must never panic on any input.

use std::convert::Infallible;

use ciborium_ll::{Decoder, Encoder, Header};

use crate::error::DecodeError;

/// Size of the scratch buffer used to step over byte strings that are not kept.
const SKIP_CHUNK: usize = 4096;

/// Reads CBOR items from a byte slice, tracking the offset of each one.
pub(crate) struct Reader<'a> {
    decoder: Decoder<&'a [u8]>,
    len: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `input`.
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Reader {
            decoder: Decoder::from(input),
            len: input.len(),
        }
    }

    /// Bytes consumed so far.
    pub(crate) fn offset(&mut self) -> usize {
        self.decoder.offset()
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&mut self) -> usize {
        self.len.saturating_sub(self.decoder.offset())
    }

    /// The next item header.
    pub(crate) fn pull(&mut self) -> Result<Header, DecodeError> {
        let offset = self.offset();
        self.decoder.pull().map_err(|error| match error {
            ciborium_ll::Error::Io(_) => DecodeError::Truncated,
            ciborium_ll::Error::Syntax(at) => DecodeError::Cbor {
                offset: at.max(offset),
            },
        })
    }

    /// An unsigned integer.
    pub(crate) fn uint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let offset = self.offset();
        match self.pull()? {
            Header::Positive(value) => Ok(value),
            _ => Err(DecodeError::Unexpected { what, offset }),
        }
    }

    /// The header of a definite-length array: its number of items.
    pub(crate) fn array(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.offset();
        match self.pull()? {
            Header::Array(Some(len)) => Ok(len),
            _ => Err(DecodeError::Unexpected { what, offset }),
        }
    }

    /// The header of a definite-length byte string: its length, already checked against the
    /// bytes left in the input.
    pub(crate) fn bytes_header(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.offset();
        match self.pull()? {
            Header::Bytes(Some(len)) if len <= self.remaining() => Ok(len),
            Header::Bytes(Some(_)) => Err(DecodeError::Truncated),
            _ => Err(DecodeError::Unexpected { what, offset }),
        }
    }

    /// The content of a byte string whose header [`Reader::bytes_header`] just returned `len`.
    pub(crate) fn bytes_content(&mut self, len: usize) -> Result<Vec<u8>, DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        // Allocation is bounded by the input itself (checked just above).
        let mut content = vec![0u8; len];
        if len > 0 {
            self.read_into(len, &mut content)?;
        }
        Ok(content)
    }

    /// Steps over the content of a byte string whose header just returned `len`, without
    /// keeping it.
    pub(crate) fn skip_content(&mut self, len: usize) -> Result<(), DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let mut scratch = [0u8; SKIP_CHUNK];
        let mut segments = self.decoder.bytes(Some(len));
        while let Some(mut segment) = segments.pull().map_err(|_| DecodeError::Truncated)? {
            while segment
                .pull(&mut scratch)
                .map_err(|_| DecodeError::Truncated)?
                .is_some()
            {}
        }
        Ok(())
    }

    /// A definite-length byte string of at most `max` bytes.
    pub(crate) fn bytes(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let offset = self.offset();
        let len = self.bytes_header(what)?;
        if len > max {
            return Err(DecodeError::Unexpected { what, offset });
        }
        self.bytes_content(len)
    }

    /// The content of a text string whose header (at `offset`) just announced `len` bytes; at
    /// most `max` bytes are accepted.
    pub(crate) fn text_content(
        &mut self,
        what: &'static str,
        offset: usize,
        len: usize,
        max: usize,
    ) -> Result<String, DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        if len > max {
            return Err(DecodeError::Unexpected { what, offset });
        }
        let mut content = vec![0u8; len];
        if len > 0 {
            // Read as bytes (a text and a byte string header of one length have one size), so
            // that UTF-8 is checked once on the whole string below rather than per chunk.
            self.read_into(len, &mut content)?;
        }
        String::from_utf8(content).map_err(|_| DecodeError::Unexpected { what, offset })
    }

    /// Reads exactly `len` content bytes (the header was just pulled) into `out[..len]`.
    fn read_into(&mut self, len: usize, out: &mut [u8]) -> Result<(), DecodeError> {
        let mut filled = 0;
        let mut segments = self.decoder.bytes(Some(len));
        while let Some(mut segment) = segments.pull().map_err(|_| DecodeError::Truncated)? {
            while let Some(chunk) = segment
                .pull(&mut out[filled..])
                .map_err(|_| DecodeError::Truncated)?
            {
                filled += chunk.len();
                if chunk.is_empty() {
                    break;
                }
            }
        }
        if filled == len {
            Ok(())
        } else {
            Err(DecodeError::Truncated)
        }
    }
}

/// A write target for [`Encoder`] that cannot fail: encoding into memory has no error path, so
/// codecs built on it return plain values instead of results nobody could act on.
pub(crate) struct Sink<'a>(pub(crate) &'a mut Vec<u8>);

impl ciborium_io::Write for Sink<'_> {
    type Error = Infallible;

    fn write_all(&mut self, data: &[u8]) -> Result<(), Infallible> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Appends one item header to `out`.
pub(crate) fn push(out: &mut Vec<u8>, header: Header) {
    let Ok(()) = Encoder::from(Sink(out)).push(header);
}

/// Appends a definite-length byte string to `out`.
pub(crate) fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    push(out, Header::Bytes(Some(bytes.len())));
    out.extend_from_slice(bytes);
}

/// Appends a definite-length text string to `out`.
pub(crate) fn push_text(out: &mut Vec<u8>, text: &str) {
    push(out, Header::Text(Some(text.len())));
    out.extend_from_slice(text.as_bytes());
}
