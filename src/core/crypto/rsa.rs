//! RSASSA-PKCS1-v1_5 and RSASSA-PSS verification (RFC 8017 §8.2.2 and §8.1.2) for moduli of
//! 2048 to 4096 bits and public exponent 65537, on the variable-time Montgomery arithmetic
//! of the `rsa-montgomery` crate.
//!
//! RSAVP1 is s^65537 mod n: sixteen squarings and one multiplication. The encoded message
//! is then checked whole, never parsed leniently: for PKCS#1 v1.5 it must equal, byte for
//! byte, the one encoding of the expected DigestInfo (no ASN.1 parsing, so no
//! Bleichenbacher-style forgery through ignored bytes); for PSS it goes through
//! EMSA-PSS-VERIFY with the salt length equal to the hash length (RFC 7518 §3.5).
//! The Montgomery parameters are computed once per key; a verification allocates nothing.

use super::montgomery::Modulus;
use super::HashAlg;

/// The smallest modulus accepted (RFC 7518 §3.3: 2048 bits or larger).
pub const MIN_MODULUS_BITS: u32 = 2048;
/// The largest modulus accepted: bounds the work an attacker's token can cost.
pub const MAX_MODULUS_BITS: u32 = 4096;
const MAX_MODULUS_BYTES: usize = 512;

/// Why an RSA public key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaKeyError {
    /// The public exponent is not 65537.
    Exponent,
    /// The modulus is outside 2048..=4096 bits.
    ModulusSize,
    /// The modulus is even (not an RSA modulus).
    EvenModulus,
}

impl std::fmt::Display for RsaKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RsaKeyError::Exponent => "RSA public exponent must be 65537",
            RsaKeyError::ModulusSize => "RSA modulus must have 2048 to 4096 bits",
            RsaKeyError::EvenModulus => "RSA modulus must be odd",
        })
    }
}

/// An RSA public key prepared for verification.
#[derive(Clone)]
pub struct RsaPublicKey {
    modulus: Modulus,
    /// k: the length of n in bytes.
    len: usize,
    /// The bit length of n.
    bits: u32,
}

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaPublicKey")
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or(&[])
}

impl RsaPublicKey {
    /// Prepares the key from its big-endian modulus `n` and exponent `e`.
    pub fn new(n: &[u8], e: &[u8]) -> Result<RsaPublicKey, RsaKeyError> {
        if strip_leading_zeros(e) != [0x01, 0x00, 0x01] {
            return Err(RsaKeyError::Exponent);
        }
        let n = strip_leading_zeros(n);
        let top = n.first().copied().unwrap_or(0);
        let bits = u32::try_from(n.len())
            .ok()
            .and_then(|l| l.checked_mul(8))
            .and_then(|b| b.checked_sub(top.leading_zeros()))
            .unwrap_or(0);
        if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&bits) {
            return Err(RsaKeyError::ModulusSize);
        }
        if n.last().is_none_or(|b| b & 1 == 0) {
            return Err(RsaKeyError::EvenModulus);
        }
        let modulus = Modulus::new(n).ok_or(RsaKeyError::EvenModulus)?;
        Ok(RsaPublicKey {
            modulus,
            len: n.len(),
            bits,
        })
    }

    /// The bit length of the modulus.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// RSAVP1 then I2OSP to k bytes: s^65537 mod n, or None when the signature is not
    /// exactly k bytes or its integer is not below n (RFC 8017 §5.2.2, §8.2.2 step 1).
    pub(crate) fn encoded_message(&self, sig: &[u8]) -> Option<EncodedMessage> {
        if sig.len() != self.len {
            return None;
        }
        let mut em = EncodedMessage {
            bytes: [0; MAX_MODULUS_BYTES],
            len: self.len,
        };
        let out = em.bytes.get_mut(..self.len)?;
        self.modulus.pow65537(sig, out).then_some(em)
    }

    /// RSASSA-PKCS1-v1_5 verification of `sig` over `msg` with `hash`.
    pub fn verify_pkcs1v15(&self, hash: HashAlg, msg: &[u8], sig: &[u8]) -> bool {
        let Some(em) = self.encoded_message(sig) else {
            return false;
        };
        let digest = hash.digest(&[msg]);
        let prefix = digest_info_prefix(hash);
        // EM = 0x00 || 0x01 || PS (0xff, at least 8 bytes) || 0x00 || DigestInfo prefix || H
        let t_len = prefix.len() + hash.output_len();
        let ps_len = match self.len.checked_sub(t_len + 3) {
            Some(l) if l >= 8 => l,
            _ => return false,
        };
        let Some(rest) = em.strip_prefix(&[0x00, 0x01]) else {
            return false;
        };
        let Some((ps, rest)) = rest.split_at_checked(ps_len) else {
            return false;
        };
        ps.iter().all(|b| *b == 0xff)
            && rest
                .strip_prefix(&[0x00])
                .and_then(|t| t.strip_prefix(prefix))
                .is_some_and(|h| h == digest.as_ref())
    }

    /// RSASSA-PSS verification of `sig` over `msg` with `hash`, MGF1 with the same hash and a
    /// salt as long as the hash (EMSA-PSS-VERIFY, RFC 8017 §9.1.2).
    pub fn verify_pss(&self, hash: HashAlg, msg: &[u8], sig: &[u8]) -> bool {
        let Some(em_k) = self.encoded_message(sig) else {
            return false;
        };
        let h_len = hash.output_len();
        let s_len = h_len;
        let em_bits = self.bits - 1;
        let Ok(em_len) = usize::try_from(em_bits.div_ceil(8)) else {
            return false;
        };
        // I2OSP(m, emLen): with a modulus of 8x+1 bits emLen = k - 1 and the first byte of
        // the k-byte value must be zero.
        let Some((lead, em)) = em_k.split_at_checked(self.len.saturating_sub(em_len)) else {
            return false;
        };
        if lead.iter().any(|b| *b != 0) || em.len() != em_len {
            return false;
        }
        if em_len < h_len + s_len + 2 {
            return false;
        }
        let Some((&0xbc, em)) = em.split_last() else {
            return false;
        };
        let Some((masked_db, h)) = em.split_at_checked(em_len - h_len - 1) else {
            return false;
        };
        // The leftmost 8·emLen − emBits bits of DB must be zero.
        let unused_bits = (8 * em_bits.div_ceil(8)) - em_bits;
        let keep_mask = 0xffu8.checked_shr(unused_bits).unwrap_or(0);
        if masked_db.first().is_none_or(|b| b & !keep_mask != 0) {
            return false;
        }
        let mut db_buf = [0u8; MAX_MODULUS_BYTES];
        let Some(db) = db_buf.get_mut(..masked_db.len()) else {
            return false;
        };
        db.copy_from_slice(masked_db);
        mgf1_xor(hash, h, db);
        if let Some(b) = db.first_mut() {
            *b &= keep_mask;
        }
        let ps_len = em_len - h_len - s_len - 2;
        let Some((ps, rest)) = db.split_at_checked(ps_len) else {
            return false;
        };
        if ps.iter().any(|b| *b != 0) {
            return false;
        }
        let Some(salt) = rest.strip_prefix(&[0x01]) else {
            return false;
        };
        let m_hash = hash.digest(&[msg]);
        let expected = hash.digest(&[&[0u8; 8], m_hash.as_ref(), salt]);
        expected.as_ref() == h
    }
}

/// The encoded message of a signature, k bytes on the stack.
pub(crate) struct EncodedMessage {
    bytes: [u8; MAX_MODULUS_BYTES],
    len: usize,
}

impl std::ops::Deref for EncodedMessage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

/// XORs MGF1(seed) (RFC 8017 §B.2.1) into `out`.
fn mgf1_xor(hash: HashAlg, seed: &[u8], out: &mut [u8]) {
    for (counter, chunk) in (0u32..).zip(out.chunks_mut(hash.output_len())) {
        let mask = hash.digest(&[seed, &counter.to_be_bytes()]);
        for (o, m) in chunk.iter_mut().zip(mask.as_ref()) {
            *o ^= m;
        }
    }
}

/// The DER prefix of DigestInfo for `hash` (RFC 8017 §9.2, note 1).
fn digest_info_prefix(hash: HashAlg) -> &'static [u8] {
    match hash {
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        HashAlg::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    }
}
