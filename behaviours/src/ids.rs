//! Node ids on the wire and in files: a [`PeerId`] travels and is stored as its base58 text (the
//! shape the seed gives), and is parsed exactly once, when a message or file is decoded. A record
//! with an id that does not parse is refused with the message that carries it.

use libp2p::PeerId;
use serde::{Deserialize, Deserializer, Serializer};

/// `#[serde(with = "crate::ids::base58")]` for a `PeerId` field.
pub mod base58 {
    use super::*;

    /// Writes the id as base58 text.
    pub fn serialize<S: Serializer>(id: &PeerId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&id.to_base58())
    }

    /// Reads base58 text; anything else is a decoding error.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PeerId, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("not a node id: {text:?}")))
    }
}

/// `#[serde(with = "crate::ids::bytes")]` for a `Vec<u8>` field: a CBOR byte string on the
/// wire (not an array of integers, which would double its size), lowercase hex in JSON files.
pub mod bytes {
    use super::*;

    /// Bytes for binary formats, hex for text formats.
    pub fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(value))
        } else {
            serializer.serialize_bytes(value)
        }
    }

    struct Visitor;

    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes or hex text")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            hex::decode(v).map_err(|_| E::custom("not hex"))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    /// Reads a byte string, hex text, or an array of bytes. Binary formats are asked for an
    /// owned buffer: ciborium's `deserialize_bytes` refuses byte strings longer than its 4 KiB
    /// scratch buffer (a roster of a few cards is larger).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Visitor)
        } else {
            deserializer.deserialize_byte_buf(Visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Carrier {
        #[serde(with = "base58")]
        id: PeerId,
    }

    #[test]
    fn round_trips_as_text_and_refuses_garbage() {
        let carrier = Carrier {
            id: PeerId::random(),
        };
        let json = serde_json::to_string(&carrier).unwrap();
        assert_eq!(json, format!("{{\"id\":\"{}\"}}", carrier.id.to_base58()));
        assert_eq!(serde_json::from_str::<Carrier>(&json).unwrap(), carrier);
        let error = serde_json::from_str::<Carrier>("{\"id\":\"nope\"}").unwrap_err();
        assert!(error.to_string().contains("not a node id"), "{error}");
    }
}
