//! Endpoint ids: `dtn://<NodeId>/<service>` (RFC 9171 §4.2.5.1.1, scheme code 1), and how they
//! sit in CBOR: `[1, "//<NodeId>/<service>"]`, or `[1, 0]` for `dtn:none`.
//!
//! ztmesh only ever addresses a service on a node, so [`Eid`] cannot hold `dtn:none` or an
//! `ipn` endpoint; the one field that may be `dtn:none` (report-to) is an `Option<Eid>`.

use std::fmt;
use std::str::FromStr;

use ciborium_ll::Header;
use ztmesh_core::NodeId;

use crate::cbor::{push, push_text, Reader};
use crate::error::{DecodeError, EidError};

/// URI scheme code of the `dtn` scheme (RFC 9171 §9.6).
pub const DTN_SCHEME_CODE: u64 = 1;

/// Longest service name.
pub const MAX_SERVICE_LEN: usize = 64;

/// Length of a NodeId's text form (20 bytes in unpadded base32).
const NODE_ID_TEXT_LEN: usize = 32;

/// Longest scheme-specific part read from the wire: `//`, a NodeId, `/` and a service.
const MAX_SSP_LEN: usize = 2 + NODE_ID_TEXT_LEN + 1 + MAX_SERVICE_LEN;

/// A service endpoint on a node: `dtn://<NodeId>/<service>`, the service being 1 to 64
/// characters of `a-z`, `0-9`, `.`, `_` and `-`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Eid {
    node: NodeId,
    service: String,
}

impl Eid {
    /// The endpoint of `service` on `node`.
    pub fn new(node: NodeId, service: &str) -> Result<Self, EidError> {
        if !is_valid_service(service) {
            return Err(EidError::Service);
        }
        Ok(Eid {
            node,
            service: service.to_owned(),
        })
    }

    /// The node the endpoint lives on.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The service name on that node.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Parses the scheme-specific part `//<node>/<service>`.
    fn from_ssp(ssp: &str) -> Result<Self, EidError> {
        let rest = ssp.strip_prefix("//").ok_or(EidError::Syntax)?;
        let (node, service) = rest.split_once('/').ok_or(EidError::Syntax)?;
        Eid::new(node.parse()?, service)
    }
}

fn is_valid_service(service: &str) -> bool {
    (1..=MAX_SERVICE_LEN).contains(&service.len())
        && service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl fmt::Display for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dtn://{}/{}", self.node, self.service)
    }
}

impl fmt::Debug for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Eid({self})")
    }
}

impl FromStr for Eid {
    type Err = EidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "dtn:none" {
            return Err(EidError::NullEndpoint);
        }
        Eid::from_ssp(s.strip_prefix("dtn:").ok_or(EidError::Syntax)?)
    }
}

/// Appends `[1, "//node/service"]`, or `[1, 0]` (`dtn:none`) for `None`.
pub(crate) fn encode_eid(out: &mut Vec<u8>, eid: Option<&Eid>) {
    push(out, Header::Array(Some(2)));
    push(out, Header::Positive(DTN_SCHEME_CODE));
    match eid {
        Some(eid) => push_text(out, &format!("//{}/{}", eid.node, eid.service)),
        None => push(out, Header::Positive(0)),
    }
}

/// Reads an endpoint id; `None` is `dtn:none`.
pub(crate) fn decode_eid(reader: &mut Reader<'_>) -> Result<Option<Eid>, DecodeError> {
    let offset = reader.offset();
    if reader.array("endpoint id")? != 2 {
        return Err(DecodeError::Unexpected {
            what: "endpoint id [scheme, ssp]",
            offset,
        });
    }
    let scheme = reader.uint("URI scheme code")?;
    if scheme != DTN_SCHEME_CODE {
        return Err(EidError::Scheme(scheme).into());
    }
    let offset = reader.offset();
    match reader.pull()? {
        Header::Positive(0) => Ok(None),
        Header::Text(Some(len)) => {
            let ssp = reader.text_content("dtn scheme-specific part", offset, len, MAX_SSP_LEN)?;
            Ok(Some(Eid::from_ssp(&ssp)?))
        }
        _ => Err(DecodeError::Unexpected {
            what: "dtn scheme-specific part",
            offset,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        NodeId::from_spki_der(b"abc")
    }

    #[test]
    fn text_form_round_trips() {
        let eid = Eid::new(node(), "chat.v1_x-2").unwrap();
        let text = eid.to_string();
        assert_eq!(text, "dtn://xj4bnp4pahh6uqkbidpf3lrceoyagynd/chat.v1_x-2");
        assert_eq!(text.parse::<Eid>().unwrap(), eid);
    }

    #[test]
    fn bad_services_and_forms_are_refused() {
        let long = "a".repeat(MAX_SERVICE_LEN + 1);
        for service in ["", "Chat", "a/b", "a b", "é", long.as_str()] {
            assert_eq!(
                Eid::new(node(), service),
                Err(EidError::Service),
                "{service:?}"
            );
        }
        assert!(Eid::new(node(), &"a".repeat(MAX_SERVICE_LEN)).is_ok());
        assert_eq!("dtn:none".parse::<Eid>(), Err(EidError::NullEndpoint));
        assert_eq!("ipn:1.2".parse::<Eid>(), Err(EidError::Syntax));
        assert_eq!(
            format!("dtn:{}/x", node()).parse::<Eid>(),
            Err(EidError::Syntax)
        );
        assert_eq!(
            format!("dtn://{}", node()).parse::<Eid>(),
            Err(EidError::Syntax)
        );
        assert!(matches!(
            "dtn://NODE/x".parse::<Eid>(),
            Err(EidError::Node(_))
        ));
        assert_eq!(
            format!("dtn://{}/a/b", node()).parse::<Eid>(),
            Err(EidError::Service)
        );
    }

    #[test]
    fn cbor_form_is_scheme_code_and_ssp_text() {
        let eid = Eid::new(node(), "x").unwrap();
        let mut out = Vec::new();
        encode_eid(&mut out, Some(&eid));
        // [1, "//xj4b.../x"]: array(2), uint 1, text(36).
        assert_eq!(&out[..4], &[0x82, 0x01, 0x78, 36]);
        assert_eq!(&out[4..], format!("//{}/x", node()).as_bytes());
        assert_eq!(decode_eid(&mut Reader::new(&out)).unwrap(), Some(eid));

        let mut none = Vec::new();
        encode_eid(&mut none, None);
        assert_eq!(none, [0x82, 0x01, 0x00]);
        assert_eq!(decode_eid(&mut Reader::new(&none)).unwrap(), None);

        // ipn:2.1 as [2, [2, 1]] is refused by scheme.
        assert_eq!(
            decode_eid(&mut Reader::new(&[0x82, 0x02, 0x82, 0x02, 0x01])),
            Err(DecodeError::Eid(EidError::Scheme(2)))
        );
    }
}
