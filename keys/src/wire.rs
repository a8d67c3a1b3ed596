//! Wire encoding shared by every message: one protocol-version byte followed by a CBOR map.
//!
//! Decoders here are the only entry points for untrusted bytes. They bound the input size
//! (version byte included), check the version byte before parsing, check that the CBOR is in
//! the strict subset PQ4 uses ([`check_strict`]), refuse trailing bytes, and reject byte
//! strings of the wrong length, so a malformed input is an error and never a panic or a large
//! allocation, and every value has exactly one accepted encoding up to the order of map keys.

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
    if check_strict(body)? != body.len() {
        return Err(DecodeError::TrailingBytes);
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

/// Deepest nesting of arrays and maps accepted (PQ4's deepest object, a sealed group state,
/// nests four levels).
pub(crate) const MAX_DEPTH: usize = 16;

/// Checks that `body` starts with one CBOR data item in the strict subset PQ4 uses and returns
/// its length. Refused: integers and lengths not in their shortest form, indefinite lengths,
/// tags, negative integers, floats and simple values other than `null`, map keys that are not
/// text strings, text that is not UTF-8, nesting deeper than [`MAX_DEPTH`]. The walk never
/// allocates: a length larger than the remaining input is `Malformed` at once.
pub(crate) fn check_strict(body: &[u8]) -> Result<usize, DecodeError> {
    let mut reader = StrictReader { buf: body, pos: 0 };
    reader.item(0)?;
    Ok(reader.pos)
}

struct StrictReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl StrictReader<'_> {
    fn take(&mut self, n: u64) -> Result<&[u8], DecodeError> {
        let remaining = self.buf.len() - self.pos;
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= remaining)
            .ok_or(DecodeError::Malformed)?;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Malformed)
    }

    /// The argument of a head (RFC 8949 §3), required in its shortest form.
    fn argument(&mut self, info: u8) -> Result<u64, DecodeError> {
        let (len, min) = match info {
            0..=23 => return Ok(u64::from(info)),
            24 => (1, 24),
            25 => (2, 0x100),
            26 => (4, 0x1_0000),
            27 => (8, 0x1_0000_0000),
            31 => return Err(DecodeError::Noncanonical("indefinite length")),
            _ => return Err(DecodeError::Malformed),
        };
        let value = self
            .take(len)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        if value < min {
            return Err(DecodeError::Noncanonical(
                "integer or length not in shortest form",
            ));
        }
        Ok(value)
    }

    fn item(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::Noncanonical("nesting too deep"));
        }
        let head = self.peek()?;
        self.pos += 1;
        let (major, info) = (head >> 5, head & 0x1f);
        match major {
            1 => return Err(DecodeError::Noncanonical("negative integer")),
            6 => return Err(DecodeError::Noncanonical("tag")),
            7 if head == 0xf6 => return Ok(()),
            7 => {
                return Err(DecodeError::Noncanonical(
                    "float or simple value other than null",
                ));
            }
            _ => {}
        }
        let arg = self.argument(info)?;
        match major {
            0 => Ok(()),
            2 => self.take(arg).map(|_| ()),
            3 => core::str::from_utf8(self.take(arg)?)
                .map(|_| ())
                .map_err(|_| DecodeError::Noncanonical("text string is not UTF-8")),
            4 => (0..arg).try_for_each(|_| self.item(depth + 1)),
            _ => (0..arg).try_for_each(|_| {
                if self.peek()? >> 5 != 3 {
                    return Err(DecodeError::Noncanonical("map key is not a text string"));
                }
                self.item(depth + 1)?;
                self.item(depth + 1)
            }),
        }
    }
}

/// Serde adapter: an optional value whose key must be present, `null` when there is none.
/// (serde treats a missing `Option` field as `None`; with this adapter a missing key is an
/// error, so every value has one encoding.)
pub(crate) mod nullable {
    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<T>::deserialize(d)
    }
}

/// Serde adapter: an optional fixed-size byte string whose key must be present: `null` or a
/// byte string of exactly `N` bytes.
pub(crate) mod nullable_fixed {
    use core::fmt;
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        value: &Option<[u8; N]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_bytes(bytes),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<Option<[u8; N]>, D::Error> {
        d.deserialize_option(NullableVisitor::<N>)
    }

    struct NullableVisitor<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for NullableVisitor<N> {
        type Value = Option<[u8; N]>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "null or a byte string of {N} bytes")
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::fixed::deserialize(d).map(Some)
        }
    }
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
