#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = constella_keys::Envelope::from_bytes(data) {
        // A decoded envelope re-encodes to bytes that decode to the same value.
        assert_eq!(
            constella_keys::Envelope::from_bytes(&e.to_bytes()).ok(),
            Some(e)
        );
    }
    // The same bytes as a decrypted plaintext: typed content decodes or fails, never panics.
    if let Ok(c) = constella_keys::Content::from_bytes(data) {
        assert!(constella_keys::Content::from_bytes(&c.to_bytes()).is_ok());
    }
});
