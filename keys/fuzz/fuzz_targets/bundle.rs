#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = constella_keys::PreKeyBundle::from_bytes(data) {
        let _ = b.verify();
        // Re-encoding a decoded value must decode again.
        assert!(constella_keys::PreKeyBundle::from_bytes(&b.to_bytes()).is_ok());
    }
});
