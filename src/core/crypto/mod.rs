//! Signature verification primitives, chosen by measurement inside Envoy's V8 (the figures
//! and the method are in `bench/README.md`): RSA on the filter's own variable-time Montgomery
//! arithmetic (the `rsa-montgomery` crate) with an exact encoded-message comparison, ECDSA on `p256`/`p384`, Ed25519 on
//! `ed25519-dalek`. Verification handles no secret, so none of it needs constant time.

/// The RSA arithmetic (its own crate, built at opt-level 3: see its docs).
pub use rsa_montgomery as montgomery;
pub mod rsa;

/// A SHA-2 hash used by the RS*/PS* algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
}

/// A hash value of up to 64 bytes, kept on the stack.
#[derive(Clone, Copy)]
pub struct HashOutput {
    bytes: [u8; 64],
    len: usize,
}

impl AsRef<[u8]> for HashOutput {
    fn as_ref(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

impl HashAlg {
    /// The output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The hash of the concatenation of `parts`.
    pub fn digest(self, parts: &[&[u8]]) -> HashOutput {
        match self {
            HashAlg::Sha256 => digest_with::<sha2::Sha256>(parts),
            HashAlg::Sha384 => digest_with::<sha2::Sha384>(parts),
            HashAlg::Sha512 => digest_with::<sha2::Sha512>(parts),
        }
    }
}

fn digest_with<D: sha2::Digest>(parts: &[&[u8]]) -> HashOutput {
    let mut h = D::new();
    for p in parts {
        h.update(p);
    }
    let out = h.finalize();
    let mut bytes = [0u8; 64];
    for (b, o) in bytes.iter_mut().zip(out.iter()) {
        *b = *o;
    }
    HashOutput {
        bytes,
        len: out.len().min(64),
    }
}
