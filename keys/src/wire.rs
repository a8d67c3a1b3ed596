//! Wire encoding shared by every message: one protocol-version byte followed by a CBOR map.
//!
//! Decoders here are the only entry points for untrusted bytes. They bound the input size,
//! check the version byte before parsing, refuse trailing bytes, and reject byte strings of the
//! wrong length, so a malformed input is an error and never a panic or a large allocation.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PROTOCOL_VERSION;
use crate::error::DecodeError;

/// Encodes `value` as `PROTOCOL_VERSION ‖ CBOR(value)`.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_with_capacity(value, 256)
}

/// As [`encode`], reserving `capacity` up front so that secret-bearing encodings are not
/// reallocated (a reallocation would leave an unzeroized copy behind).
pub(crate) fn encode_with_capacity<T: Serialize>(value: &T, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.push(PROTOCOL_VERSION);
    // Writing to a Vec cannot fail and our types have no fallible Serialize impls; should that
    // ever change, the empty output fails to decode instead of carrying a partial message.
    if ciborium::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Decodes `PROTOCOL_VERSION ‖ CBOR(T)` strictly.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], max_len: usize) -> Result<T, DecodeError> {
    if bytes.len() > max_len {
        return Err(DecodeError::TooLarge);
    }
    let (&version, mut body) = bytes.split_first().ok_or(DecodeError::Malformed)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    // Our own scratch buffer, zeroized afterwards: sealed contents pass through it.
    let mut scratch = zeroize::Zeroizing::new([0u8; 4096]);
    let value = ciborium::from_reader_with_buffer(&mut body, scratch.as_mut_slice())
        .map_err(|_| DecodeError::Malformed)?;
    if !body.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(value)
}

/// Serde adapter: a fixed-size array as a CBOR byte string of exactly `N` bytes.
pub(crate) mod fixed {
    use core::fmt;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        value: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(value)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        d.deserialize_bytes(FixedVisitor::<N>)
    }

    struct FixedVisitor<const N: usize>;

    impl<const N: usize> Visitor<'_> for FixedVisitor<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a byte string of {N} bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
        }
    }
}

/// Serde adapter: a `Vec<u8>` as a CBOR byte string (not an array of integers).
pub(crate) mod bytes {
    use core::fmt;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(value)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl Visitor<'_> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
            Ok(v)
        }
    }
}

/// Serde adapter: a boxed fixed-size array (large keys and ciphertexts stay off the stack).
pub(crate) mod fixed_box {
    use serde::{Deserializer, Serializer};

    #[allow(clippy::borrowed_box)] // serde's `with` passes a reference to the field's type
    pub(crate) fn serialize<S: Serializer, const N: usize>(
        value: &Box<[u8; N]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&value[..])
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<Box<[u8; N]>, D::Error> {
        super::fixed::deserialize(d).map(Box::new)
    }
}
