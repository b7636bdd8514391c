//! Randomness as an argument: the host's source in production, a fixed one in tests.

/// A source of randomness (the host's in production, a fixed one in tests).
pub trait Entropy {
    /// Fills `buf` with random bytes, or fails (and the request is denied).
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError>;
}

/// The random source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntropyError;
