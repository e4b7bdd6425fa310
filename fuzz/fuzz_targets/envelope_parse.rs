//! Fuzzes the envelope decoder: `envelope::parse` on arbitrary bytes, then
//! signature verification with a fixed key and decryption with a fixed group
//! key on whatever parses. Invariants checked beyond "no panic":
//! - every error has one of the documented reason tokens;
//! - a parsed envelope's borrowed parts lie inside the input;
//! - nothing but the one genuine seed envelope verifies under the fixed key
//!   (any other input that verifies would be a forgery or a malleability bug).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mqseal_core::formats::envelope::{self, AeadAlg, EnvelopeError, SealInput};
use mqseal_core::formats::keys::{GroupKey, SigningKey, VerifyingKey};

const TOPIC: &str = "fleet/sensors/1111/temp";

struct Fixture {
    key: VerifyingKey,
    group_key: GroupKey,
    genuine: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let signer = SigningKey::ed25519_from_seed(&[7u8; 32]);
        let group_key = GroupKey::from_bytes([9u8; 32]);
        let genuine = envelope::seal(&SealInput {
            signer: &signer,
            sender: "1111",
            group: "sensors",
            epoch: 3,
            seq: 42,
            timestamp_ms: 1_700_000_000_000,
            topic: TOPIC,
            aead: AeadAlg::A256Gcm,
            group_key: &group_key,
            plaintext: b"{\"temp\":21.5}",
        })
        .expect("seal");
        Fixture { key: signer.verifying_key(), group_key, genuine }
    })
}

fn check_reason(e: &EnvelopeError) {
    assert!(EnvelopeError::ALL_REASONS.contains(&e.reason()));
    let _ = e.to_string();
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    match envelope::parse(data, 65536) {
        Err(e) => check_reason(&e),
        Ok(p) => {
            let range = data.as_ptr_range();
            for part in [p.sign1_protected(), p.payload(), p.signature(), p.encrypt0_protected(), p.ciphertext()] {
                assert!(range.start <= part.as_ptr() && part.as_ptr_range().end <= range.end);
            }
            match p.verify_signature(TOPIC, &f.key) {
                Err(e) => check_reason(&e),
                Ok(()) => {
                    assert_eq!(data, &f.genuine[..], "a different envelope verified under the fixed key");
                    let _ = p.decrypt(TOPIC, &f.group_key).expect("genuine envelope decrypts");
                }
            }
            if let Err(e) = p.decrypt(TOPIC, &f.group_key) {
                check_reason(&e);
            }
        }
    }
});
