//! Big-endian reads over marshalled TPM 2.0 structures, shared by the quote verifier
//! ([`crate::tpm2`]) and credential activation ([`crate::tpm2_credential`]). Every read is
//! bounds-checked, a TPM2B's size is checked against the caller's limit before its bytes are
//! read, and [`TpmReader::finish`] refuses what follows a structure. Reads answer slices of the
//! input; nothing is copied.
//!
//! This is the bottom of the TPM modules: it must never import the modules that use it. Each of
//! them converts [`TpmReadError`] into its own error type next to that type (the conversion into
//! [`CredentialError`](crate::tpm2_credential::CredentialError) lives in `tpm2_credential`), so
//! the imports point one way.

use crate::AttestError;

/// A cursor over the marshalled bytes of one TPM structure; `what` names the structure in
/// errors.
pub(crate) struct TpmReader<'a> {
    what: &'static str,
    /// The bytes not read yet.
    pub(crate) bytes: &'a [u8],
}

impl<'a> TpmReader<'a> {
    pub(crate) fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        TpmReader { what, bytes }
    }

    /// The next `len` bytes.
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], TpmReadError> {
        if self.bytes.len() < len {
            return Err(TpmReadError::Truncated(format!(
                "{}: {len} bytes needed, {} left",
                self.what,
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TpmReadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, TpmReadError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, TpmReadError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, TpmReadError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, TpmReadError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A TPM2B: u16 size, then that many bytes, at most `max`.
    pub(crate) fn tpm2b(&mut self, field: &str, max: usize) -> Result<&'a [u8], TpmReadError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(TpmReadError::Malformed(format!(
                "{}: {field} of {len} bytes, at most {max}",
                self.what
            )));
        }
        self.take(len)
    }

    /// Refuses bytes after the structure.
    pub(crate) fn finish(self) -> Result<(), TpmReadError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(TpmReadError::Malformed(format!(
                "{}: {} bytes after the structure",
                self.what,
                self.bytes.len()
            )))
        }
    }
}

/// Why a [`TpmReader`] read failed; `?` turns it into the variant of the same name of
/// [`AttestError`] or [`CredentialError`](crate::tpm2_credential::CredentialError).
#[derive(Debug)]
pub(crate) enum TpmReadError {
    /// The structure ends before a read.
    Truncated(String),
    /// A TPM2B over its limit, or bytes after the structure.
    Malformed(String),
}

impl From<TpmReadError> for AttestError {
    fn from(error: TpmReadError) -> Self {
        match error {
            TpmReadError::Truncated(why) => AttestError::Truncated(why),
            TpmReadError::Malformed(why) => AttestError::Malformed(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_must_end_exactly() {
        let bytes = [
            1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 2, 0xaa, 0xbb, 9,
        ];
        let mut reader = TpmReader::new("TEST", &bytes);
        assert_eq!(reader.u8().unwrap(), 1);
        assert_eq!(reader.u16().unwrap(), 2);
        assert_eq!(reader.u32().unwrap(), 3);
        assert_eq!(reader.u64().unwrap(), 4);
        assert_eq!(reader.tpm2b("buffer", 2).unwrap(), [0xaa, 0xbb]);
        assert_eq!(reader.bytes, [9]);
        assert_eq!(
            AttestError::from(TpmReader::new("TEST", &bytes).finish().unwrap_err()),
            AttestError::Malformed("TEST: 20 bytes after the structure".into())
        );
        assert_eq!(reader.take(1).unwrap(), [9]);
        assert!(reader.finish().is_ok());
    }

    #[test]
    fn a_tpm2b_over_its_limit_is_refused_before_its_bytes_are_read() {
        let mut reader = TpmReader::new("TEST", &[0, 3, 1, 2]);
        assert_eq!(
            AttestError::from(reader.tpm2b("buffer", 2).unwrap_err()),
            AttestError::Malformed("TEST: buffer of 3 bytes, at most 2".into())
        );
        let mut reader = TpmReader::new("TEST", &[0, 3, 1, 2]);
        assert_eq!(
            AttestError::from(reader.tpm2b("buffer", 3).unwrap_err()),
            AttestError::Truncated("TEST: 3 bytes needed, 2 left".into())
        );
        assert!(TpmReader::new("TEST", &[0]).u16().is_err());
    }
}
