//! Sealing a mesh CA's key for the store: AES-256-GCM under a key the store never holds
//! (read from a file by whoever runs the control plane), a new random nonce each time.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// A key that seals and unseals (32 bytes).
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

const CONTEXT: &[u8] = b"gophermesh mesh CA key";

impl SealKey {
    /// The key in `bytes`: 32 bytes as they are, or 64 hex digits (surrounding white
    /// space ignored); why not otherwise.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
            return Ok(Self(raw));
        }
        let text = std::str::from_utf8(bytes)
            .map(str::trim)
            .unwrap_or_default();
        let decoded = hex_decode(text).filter(|d| d.len() == 32).ok_or_else(|| {
            format!(
                "{} bytes: give 32 random bytes, or 64 hex digits (e.g. `openssl rand -hex 32`)",
                bytes.len()
            )
        })?;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&decoded);
        Ok(Self(raw))
    }

    fn key(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("a 32-byte key"))
    }

    /// `plain` sealed: hex of the nonce and the ciphertext with its tag.
    pub fn seal(&self, plain: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness for a nonce".to_owned())?;
        let mut sealed = plain.to_vec();
        self.key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(CONTEXT),
                &mut sealed,
            )
            .map_err(|_| "cannot seal".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(hex_encode(&out))
    }

    /// What [`SealKey::seal`] sealed; an error when this key did not seal it.
    pub fn unseal(&self, sealed: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
        let bytes = hex_decode(sealed).ok_or("the sealed key is not hex")?;
        if bytes.len() < NONCE_LEN {
            return Err("the sealed key is too short".to_owned());
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let mut buf = zeroize::Zeroizing::new(rest.to_vec());
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "a bad nonce")?;
        let plain = self
            .key()
            .open_in_place(nonce, Aad::from(CONTEXT), &mut buf)
            .map_err(|_| {
                "the stored CA key does not open with this seal key (another key sealed it)"
                    .to_owned()
            })?
            .len();
        buf.truncate(plain);
        Ok(buf)
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
