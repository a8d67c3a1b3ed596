#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = constella_keys::SealedBlob::from_bytes(data) {
        let _ = b.params();
        assert_eq!(
            constella_keys::SealedBlob::from_bytes(&b.to_bytes()).ok(),
            Some(b)
        );
    }
});
