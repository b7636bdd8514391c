//! Randomness for the core's `Entropy` argument and for key generation: the OS source
//! (`getrandom`), or with `--seed` a deterministic stream so that outputs repeat exactly.

use sha2::{Digest, Sha256};
use token_exchange_filter::core::{Entropy, EntropyError};

/// The operating system's random source.
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::fill(buf).map_err(|_| EntropyError)
    }
}

/// A deterministic stream for `--seed`: SHA-256(seed ‖ counter) blocks. For repeatable test
/// output only; never for keys anyone relies on.
pub struct SeededEntropy {
    seed: u64,
    counter: u64,
    block: Vec<u8>,
}

impl SeededEntropy {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> SeededEntropy {
        SeededEntropy {
            seed,
            counter: 0,
            block: Vec::new(),
        }
    }
}

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for byte in buf.iter_mut() {
            if self.block.is_empty() {
                let mut h = Sha256::new();
                h.update(self.seed.to_le_bytes());
                h.update(self.counter.to_le_bytes());
                self.counter = self.counter.wrapping_add(1);
                self.block = h.finalize().to_vec();
                self.block.reverse();
            }
            *byte = self.block.pop().ok_or(EntropyError)?;
        }
        Ok(())
    }
}

/// The source a command uses: seeded when `--seed` is given, the OS otherwise.
pub fn entropy(seed: Option<u64>) -> Box<dyn Entropy> {
    match seed {
        Some(s) => Box::new(SeededEntropy::new(s)),
        None => Box::new(OsEntropy),
    }
}

/// Passes another source through and keeps every byte drawn, so that a second decision of
/// the same request can draw exactly the same bytes ([`Replay`]).
pub struct Recording<'e> {
    source: &'e mut dyn Entropy,
    /// The bytes drawn so far, in order.
    pub drawn: Vec<u8>,
}

impl<'e> Recording<'e> {
    /// Records what `source` gives.
    pub fn new(source: &'e mut dyn Entropy) -> Self {
        Recording {
            source,
            drawn: Vec::new(),
        }
    }
}

impl Entropy for Recording<'_> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        self.source.fill(buf)?;
        self.drawn.extend_from_slice(buf);
        Ok(())
    }
}

/// The bytes a [`Recording`] kept, given again in order; fails once they run out.
pub struct Replay {
    bytes: Vec<u8>,
    at: usize,
}

impl Replay {
    /// Replays `bytes`.
    pub fn new(bytes: Vec<u8>) -> Replay {
        Replay { bytes, at: 0 }
    }
}

impl Entropy for Replay {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        let end = self.at.checked_add(buf.len()).ok_or(EntropyError)?;
        let src = self.bytes.get(self.at..end).ok_or(EntropyError)?;
        buf.copy_from_slice(src);
        self.at = end;
        Ok(())
    }
}

/// `rand_core` over an [`Entropy`], for RSA key generation. A failing source is recorded
/// (the `rand_core` 0.6 `fill_bytes` cannot report it) and the caller discards the key.
pub struct EntropyRng<'e> {
    source: &'e mut dyn Entropy,
    /// Whether the source failed at any point.
    pub failed: bool,
}

impl<'e> EntropyRng<'e> {
    /// Wraps `source`.
    pub fn new(source: &'e mut dyn Entropy) -> Self {
        EntropyRng {
            source,
            failed: false,
        }
    }
}

impl rsa::rand_core::RngCore for EntropyRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if self.source.fill(dest).is_err() {
            self.failed = true;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for EntropyRng<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat_and_differ_by_seed() {
        let draw = |seed| {
            let mut e = SeededEntropy::new(seed);
            let mut a = [0u8; 40];
            e.fill(&mut a).unwrap();
            a
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        // Split draws continue the same stream.
        let mut e = SeededEntropy::new(1);
        let (mut x, mut y) = ([0u8; 7], [0u8; 33]);
        e.fill(&mut x).unwrap();
        e.fill(&mut y).unwrap();
        assert_eq!([x.as_slice(), y.as_slice()].concat(), draw(1));
    }

    #[test]
    fn a_recording_replays_exactly_what_was_drawn() {
        let mut source = SeededEntropy::new(3);
        let mut rec = Recording::new(&mut source);
        let (mut a, mut b) = ([0u8; 5], [0u8; 20]);
        rec.fill(&mut a).unwrap();
        rec.fill(&mut b).unwrap();
        let mut replay = Replay::new(rec.drawn);
        let (mut c, mut d) = ([0u8; 12], [0u8; 13]);
        replay.fill(&mut c).unwrap();
        replay.fill(&mut d).unwrap();
        assert_eq!(
            [c.as_slice(), d.as_slice()].concat(),
            [a.as_slice(), b.as_slice()].concat()
        );
        assert_eq!(replay.fill(&mut [0u8; 1]), Err(EntropyError));
    }
}
