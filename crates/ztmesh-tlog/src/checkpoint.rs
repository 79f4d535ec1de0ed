//! C2SP tlog-checkpoint note bodies: the origin line, the decimal tree size, the base64 root hash,
//! then optional extension lines, each ending in a newline.
//!
//! Parsing is strict so that one checkpoint has exactly one text: no leading zeroes, a size that
//! fits in 64 bits, canonical padded base64 of exactly 32 bytes, a final newline, no empty lines.
//! A [`Checkpoint`] prints back to the very text it was parsed from, which matters because
//! signatures and cosignatures cover the text, never a re-serialization.

use std::fmt;
use std::str::FromStr;

use crate::limits::MAX_NOTE_LEN;
use crate::merkle::{empty_root, Hash};

/// Why a text is not a checkpoint. Parsing faults belong to whoever sent the text; the same
/// errors from [`Checkpoint::new`] mean the caller passed bad parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Longer than a note may be.
    #[error("checkpoint text exceeds {MAX_NOTE_LEN} bytes")]
    TooLarge,
    /// The text does not end in a newline.
    #[error("checkpoint text must end in a newline")]
    MissingFinalNewline,
    /// Fewer than the three mandatory lines.
    #[error("a checkpoint has at least three lines (origin, size, root hash)")]
    TooFewLines,
    /// The origin line is empty.
    #[error("the origin line is empty")]
    EmptyOrigin,
    /// The size line is not a canonical decimal `u64`.
    #[error("the size line is not a decimal number without leading zeroes that fits in 64 bits")]
    BadSize,
    /// The root line is not the canonical base64 of 32 bytes.
    #[error("the root hash line is not padded base64 of 32 bytes")]
    BadRootHash,
    /// An extension line is empty.
    #[error("extension line {line} is empty")]
    EmptyExtensionLine {
        /// 1-based line number within the checkpoint.
        line: usize,
    },
    /// A control character other than the line-ending newlines.
    #[error("checkpoint text contains a control character")]
    ControlCharacter,
}

/// A tree size and its root hash: what a witness remembers per log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TreeHead {
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root hash of those leaves.
    pub root: Hash,
}

impl TreeHead {
    /// The head of the empty tree.
    pub fn empty() -> Self {
        TreeHead {
            size: 0,
            root: empty_root(),
        }
    }
}

/// The body of a C2SP checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

/// Parses a tree size: ASCII digits, no sign, no leading zero unless the size is 0, fits in u64.
pub(crate) fn parse_decimal_u64(text: &str) -> Option<u64> {
    if text.is_empty()
        || text.len() > 20
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

fn check_line(line: &str) -> Result<(), CheckpointError> {
    if line.bytes().any(|b| b < 0x20) {
        return Err(CheckpointError::ControlCharacter);
    }
    Ok(())
}

impl Checkpoint {
    /// A checkpoint without extension lines. The origin must be a non-empty line.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        Checkpoint::with_extensions(origin, size, root, Vec::new())
    }

    /// A checkpoint with extension lines (each non-empty, without newline). Extension lines are
    /// not auditable by monitors and the spec does not recommend them.
    pub fn with_extensions(
        origin: &str,
        size: u64,
        root: Hash,
        extensions: Vec<String>,
    ) -> Result<Self, CheckpointError> {
        if origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        check_line(origin)?;
        for (i, extension) in extensions.iter().enumerate() {
            if extension.is_empty() {
                return Err(CheckpointError::EmptyExtensionLine { line: i + 4 });
            }
            check_line(extension)?;
        }
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        };
        if checkpoint.to_string().len() >= MAX_NOTE_LEN {
            return Err(CheckpointError::TooLarge);
        }
        Ok(checkpoint)
    }

    /// Parses a checkpoint body (the note text, ending in a newline).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        if text.len() > MAX_NOTE_LEN {
            return Err(CheckpointError::TooLarge);
        }
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::MissingFinalNewline)?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::TooFewLines);
        };
        if origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        check_line(origin)?;
        let size = parse_decimal_u64(size).ok_or(CheckpointError::BadSize)?;
        let root = Hash::from_base64(root).map_err(|_| CheckpointError::BadRootHash)?;
        let mut extensions = Vec::new();
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                return Err(CheckpointError::EmptyExtensionLine { line: i + 4 });
            }
            check_line(line)?;
            extensions.push(line.to_owned());
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        self.root
    }

    /// Extension lines, without newlines.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// Size and root.
    pub fn tree_head(&self) -> TreeHead {
        TreeHead {
            size: self.size,
            root: self.root,
        }
    }
}

impl fmt::Display for Checkpoint {
    /// The note text: every line, each ending in a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n{}\n{}\n", self.origin, self.size, self.root)?;
        for extension in &self.extensions {
            writeln!(f, "{extension}")?;
        }
        Ok(())
    }
}

impl FromStr for Checkpoint {
    type Err = CheckpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Checkpoint::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPEC_EXAMPLE: &str =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    #[test]
    fn spec_example_round_trips() {
        let checkpoint = Checkpoint::parse(SPEC_EXAMPLE).unwrap();
        assert_eq!(checkpoint.origin(), "example.com/behind-the-sofa");
        assert_eq!(checkpoint.size(), 20852163);
        assert_eq!(
            checkpoint.root().to_base64(),
            "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
        );
        assert!(checkpoint.extensions().is_empty());
        assert_eq!(checkpoint.to_string(), SPEC_EXAMPLE);

        let with_ext = format!("{SPEC_EXAMPLE}ext one\n- two\n");
        let parsed = Checkpoint::parse(&with_ext).unwrap();
        assert_eq!(parsed.extensions(), ["ext one", "- two"]);
        assert_eq!(parsed.to_string(), with_ext);
        assert_eq!(
            Checkpoint::with_extensions(
                parsed.origin(),
                parsed.size(),
                parsed.root(),
                parsed.extensions().to_vec()
            )
            .unwrap(),
            parsed
        );
    }

    #[test]
    fn size_edges() {
        let root = empty_root();
        let zero = format!("o\n0\n{root}\n");
        assert_eq!(Checkpoint::parse(&zero).unwrap().size(), 0);
        let max = format!("o\n{}\n{root}\n", u64::MAX);
        assert_eq!(Checkpoint::parse(&max).unwrap().size(), u64::MAX);
    }

    #[test]
    fn malformed_checkpoints() {
        let root = empty_root();
        let cases: Vec<(String, CheckpointError)> = vec![
            (
                format!("o\n1\n{root}"),
                CheckpointError::MissingFinalNewline,
            ),
            ("o\n1\n".into(), CheckpointError::TooFewLines),
            ("".into(), CheckpointError::MissingFinalNewline),
            ("\n".into(), CheckpointError::TooFewLines),
            (format!("\n1\n{root}\n"), CheckpointError::EmptyOrigin),
            (format!("o\n01\n{root}\n"), CheckpointError::BadSize),
            (format!("o\n00\n{root}\n"), CheckpointError::BadSize),
            (format!("o\n+1\n{root}\n"), CheckpointError::BadSize),
            (format!("o\n-1\n{root}\n"), CheckpointError::BadSize),
            (format!("o\n 1\n{root}\n"), CheckpointError::BadSize),
            (format!("o\n\n{root}\n"), CheckpointError::BadSize),
            (
                format!("o\n18446744073709551616\n{root}\n"),
                CheckpointError::BadSize,
            ),
            (
                format!("o\n99999999999999999999999\n{root}\n"),
                CheckpointError::BadSize,
            ),
            ("o\n1\nAAAA\n".into(), CheckpointError::BadRootHash),
            (format!("o\n1\n{root} \n"), CheckpointError::BadRootHash),
            (
                "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n".into(),
                CheckpointError::BadRootHash,
            ),
            (
                format!("o\n1\n{root}\n\n"),
                CheckpointError::EmptyExtensionLine { line: 4 },
            ),
            (
                format!("o\n1\n{root}\next\n\n"),
                CheckpointError::EmptyExtensionLine { line: 5 },
            ),
            (
                format!("o\r\n1\n{root}\n"),
                CheckpointError::ControlCharacter,
            ),
            (
                format!("o\n1\n{root}\ne\tx\n"),
                CheckpointError::ControlCharacter,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Checkpoint::parse(&input), Err(want), "{input:?}");
        }
        assert_eq!(
            Checkpoint::parse(&"a".repeat(MAX_NOTE_LEN + 1)),
            Err(CheckpointError::TooLarge)
        );
        assert_eq!(
            Checkpoint::new("", 1, root),
            Err(CheckpointError::EmptyOrigin)
        );
        assert_eq!(
            Checkpoint::new("a\nb", 1, root),
            Err(CheckpointError::ControlCharacter)
        );
        assert_eq!(
            Checkpoint::with_extensions("o", 1, root, vec![String::new()]),
            Err(CheckpointError::EmptyExtensionLine { line: 4 })
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(text in "[a-zA-Z0-9+/= \n\r-]{0,120}") {
            if let Ok(checkpoint) = Checkpoint::parse(&text) {
                // Anything accepted prints back to itself.
                prop_assert_eq!(checkpoint.to_string(), text);
            }
        }

        #[test]
        fn built_checkpoints_round_trip(
            origin in "[^\u{0}-\u{1f}]{1,30}", size in any::<u64>(), root in any::<[u8; 32]>(),
            extensions in proptest::collection::vec("[^\u{0}-\u{1f}]{1,10}", 0..3),
        ) {
            let checkpoint =
                Checkpoint::with_extensions(&origin, size, Hash::from_bytes(root), extensions).unwrap();
            prop_assert_eq!(Checkpoint::parse(&checkpoint.to_string()).unwrap(), checkpoint);
        }
    }
}
