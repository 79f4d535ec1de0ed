//! The crate's one error type, [`DtnError`], and the sub-enums that say whose fault it was:
//! [`DecodeError`] and [`FragmentError`] for what a peer sent, [`RequestError`] for what the
//! local caller asked, plus the store's own failures.
//!
//! [`DtnError::http_status`] is the one place where these map to HTTP statuses.

use ztmesh_core::NodeIdError;

/// Why a DTN operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DtnError {
    /// Bytes are not a well-formed frame or BPv7 bundle (a peer fault when they came from a
    /// link).
    #[error("malformed bundle or frame: {0}")]
    Malformed(#[from] DecodeError),
    /// A fragment does not fit with the other fragments of its bundle.
    #[error("fragment refused: {0}")]
    Fragment(#[from] FragmentError),
    /// The local caller asked for something that cannot be done.
    #[error("invalid request: {0}")]
    Request(#[from] RequestError),
    /// The store is at one of its bounds; retry once bundles are delivered, acknowledged by the
    /// application or expired.
    #[error(
        "bundle store is full: {bundles} bundles and {bytes} bytes held, \
         bounds {max_bundles} bundles and {max_bytes} bytes"
    )]
    StoreFull {
        /// Bundles and fragments held now.
        bundles: u64,
        /// Bytes held now.
        bytes: u64,
        /// The bound on bundles.
        max_bundles: u64,
        /// The bound on bytes.
        max_bytes: u64,
    },
    /// The durable store failed; whatever was being recorded was not acknowledged.
    #[error("bundle store failed: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The configuration cannot work (for example fragments larger than the largest bundle).
    #[error("invalid DTN configuration: {0}")]
    Config(String),
}

impl DtnError {
    /// Wraps a store implementation's error.
    pub fn store<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        DtnError::Store(Box::new(error))
    }

    /// Whether the error was caused by what a peer sent (rather than by the caller or by this
    /// node's own storage).
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, DtnError::Malformed(_) | DtnError::Fragment(_))
    }

    /// The HTTP status an API answering for this error should use.
    pub fn http_status(&self) -> u16 {
        match self {
            DtnError::Malformed(_) | DtnError::Fragment(_) => 400,
            DtnError::Request(RequestError::PayloadTooLarge { .. }) => 413,
            DtnError::Request(_) => 400,
            // 507 Insufficient Storage: the request was fine, this node cannot hold more now.
            DtnError::StoreFull { .. } => 507,
            DtnError::Store(_) | DtnError::Config(_) => 500,
        }
    }
}

/// Why bytes are not a well-formed BPv7 bundle, frame or endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than the configured maximum.
    #[error("{len} bytes exceed the {max}-byte limit")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The input ends inside an item.
    #[error("input ends inside a CBOR item")]
    Truncated,
    /// The input is not well-formed CBOR.
    #[error("malformed CBOR at byte {offset}")]
    Cbor {
        /// Offset of the offending header.
        offset: usize,
    },
    /// A CBOR item of the wrong type or shape where `what` was expected.
    #[error("expected {what} at byte {offset}")]
    Unexpected {
        /// What the format requires at this place.
        what: &'static str,
        /// Offset of the offending item.
        offset: usize,
    },
    /// Bytes follow the end of the bundle or frame.
    #[error("{0} trailing bytes after the end")]
    TrailingBytes(usize),
    /// The primary block announces a Bundle Protocol version other than 7.
    #[error("bundle protocol version {0}, only 7 is supported")]
    Version(u64),
    /// A CRC type outside RFC 9171's (0 none, 1 CRC-16 X.25, 2 CRC-32C).
    #[error("unknown CRC type {0}")]
    CrcType(u64),
    /// The primary block carries no CRC (RFC 9171 §4.3.1 requires one unless a BPSec integrity
    /// block covers it, and this node processes no BPSec blocks).
    #[error("primary block without CRC")]
    MissingPrimaryCrc,
    /// A block's CRC does not match its received bytes.
    #[error("CRC mismatch in block number {block_number}")]
    CrcMismatch {
        /// Number of the block (0 for the primary block).
        block_number: u64,
    },
    /// An endpoint id this node does not use.
    #[error("endpoint id: {0}")]
    Eid(#[from] EidError),
    /// More blocks than the limit allows.
    #[error("more than {max} blocks")]
    TooManyBlocks {
        /// The limit in force.
        max: usize,
    },
    /// Two blocks with the same number, or a canonical block numbered 0.
    #[error("invalid or repeated block number {0}")]
    BlockNumber(u64),
    /// An extension block this node cannot process whose flags say to delete the bundle in
    /// that case.
    #[error("unprocessable block type {block_type} flagged 'delete bundle if unprocessable'")]
    UnknownCriticalBlock {
        /// The block type code.
        block_type: u64,
    },
    /// The bundle has no payload block, more than one, or the payload block is not last.
    #[error("the bundle must end with exactly one payload block numbered 1")]
    PayloadBlock,
    /// Fragment offset and length do not fit in the total ADU length.
    #[error("fragment at offset {offset} of {len} bytes does not fit in an ADU of {total} bytes")]
    FragmentRange {
        /// Fragment offset.
        offset: u64,
        /// Payload length of the fragment.
        len: u64,
        /// Total ADU length announced.
        total: u64,
    },
    /// A frame kind this node does not know.
    #[error("unknown frame kind {0}")]
    FrameKind(u64),
}

/// Why text or CBOR is not a `dtn://<NodeId>/<service>` endpoint id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EidError {
    /// Not of the form `dtn://<node>/<service>`.
    #[error("expected dtn://<node-id>/<service>")]
    Syntax,
    /// `dtn:none` where an endpoint that can send or receive is required.
    #[error("dtn:none cannot be a source or destination")]
    NullEndpoint,
    /// A URI scheme other than `dtn` (for example `ipn`, code 2).
    #[error("URI scheme code {0} is not supported, only dtn (1)")]
    Scheme(u64),
    /// The node part is not a NodeId.
    #[error("node: {0}")]
    Node(#[from] NodeIdError),
    /// The service is empty, longer than 64 characters, or uses characters outside
    /// `[a-z0-9._-]`.
    #[error("service names are 1 to 64 characters of a-z, 0-9, '.', '_' and '-'")]
    Service,
}

/// Why a set of fragments cannot be (part of) one bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FragmentError {
    /// The bundle is not a fragment where one is required.
    #[error("not a fragment")]
    NotAFragment,
    /// The fragment belongs to another bundle.
    #[error("fragment of another bundle")]
    OtherBundle,
    /// The announced total ADU length exceeds the limit.
    #[error("ADU of {total} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced total ADU length.
        total: u64,
        /// The limit in force.
        max: u64,
    },
    /// Fragments of one bundle disagree on the total ADU length or on other primary fields.
    #[error("fragments disagree on the primary block ({0})")]
    Inconsistent(&'static str),
    /// The fragment overlaps another one without being identical to it.
    #[error("fragment at offset {offset} of {len} bytes overlaps another")]
    Overlap {
        /// Offset of the refused fragment.
        offset: u64,
        /// Its payload length.
        len: u64,
    },
    /// An empty fragment, or a fragment of an empty ADU.
    #[error("empty fragment")]
    Empty,
    /// Fragmentation asked of a bundle flagged "must not be fragmented", or with a zero size.
    #[error("bundle cannot be fragmented: {0}")]
    CannotFragment(&'static str),
}

/// Why a local request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The source service or destination is not a valid endpoint.
    #[error("endpoint: {0}")]
    Eid(#[from] EidError),
    /// The time to live is zero or longer than the configured maximum lifetime.
    #[error("lifetime of {requested_ms} ms is outside 1..={max_ms} ms")]
    Lifetime {
        /// What was asked for.
        requested_ms: u128,
        /// The longest lifetime accepted.
        max_ms: u64,
    },
    /// The payload is larger than the largest ADU accepted.
    #[error("payload of {len} bytes exceeds the {max}-byte limit")]
    PayloadTooLarge {
        /// Payload length.
        len: u64,
        /// The limit in force.
        max: u64,
    },
    /// The clock reads before 2000-01-01, the DTN epoch, so no creation timestamp can be made.
    #[error("the clock reads before the DTN epoch (2000-01-01)")]
    ClockBeforeDtnEpoch,
}

/// Why text is not a [`BundleId`](crate::bpv7::BundleId) (`<source>.<dtn_time_ms>.<seq>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleIdError {
    /// Not three dot-separated parts with canonical decimal numbers.
    #[error("expected <node-id>.<dtn-time-ms>.<seq> with decimal numbers")]
    Syntax,
    /// The source part is not a NodeId.
    #[error("source: {0}")]
    Node(#[from] NodeIdError),
}
