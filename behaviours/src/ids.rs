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
