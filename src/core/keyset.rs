//! The keys in force at one moment that the policy itself does not hold: each fetched
//! issuer's last key set (with its version and when it was fetched) and the gateway's
//! generated signing keys. `decide` takes a snapshot as an input, so the decision stays a
//! pure function of the request, the policy, the keys and the clock. A policy whose keys
//! are all inline decides with an empty snapshot, which never changes.

use std::sync::Arc;

use super::config::{Policy, TrustedIssuer};
use super::entropy::Entropy;
use super::keys::IssuerKey;
use super::signing::{KeyMaterial, SignError, SigningKey};

/// One issuer's key set as last fetched.
#[derive(Debug, Clone)]
pub struct FetchedKeySet {
    /// Increases with every change of the set's content.
    pub version: u64,
    /// When the set was last fetched successfully (content changed or not), in ms since
    /// the Unix epoch.
    pub fetched_at_ms: u64,
    /// The usable keys.
    pub keys: Arc<Vec<IssuerKey>>,
}

/// The keys in force at one moment (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct KeySnapshot {
    fetched: Vec<(String, FetchedKeySet)>,
    generated: Vec<Arc<SigningKey>>,
}

/// Why no key of an issuer could be selected for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMiss {
    /// No key with the token's `kid` (or no `kid` and not exactly one key): a refetch may
    /// find it.
    UnknownKid,
    /// The issuer's fetched keys were never fetched, or are older than
    /// `jwks_max_stale_seconds`, and no inline key fits.
    Unavailable,
}

impl KeySnapshot {
    /// An empty snapshot: nothing fetched, nothing generated.
    pub fn new() -> KeySnapshot {
        KeySnapshot::default()
    }

    /// Sets (or replaces) the fetched set of `issuer`.
    pub fn set_fetched(&mut self, issuer: &str, set: FetchedKeySet) {
        match self.fetched.iter_mut().find(|(i, _)| i == issuer) {
            Some((_, s)) => *s = set,
            None => self.fetched.push((issuer.to_owned(), set)),
        }
    }

    /// Forgets the fetched set of `issuer`.
    pub fn clear_fetched(&mut self, issuer: &str) {
        self.fetched.retain(|(i, _)| i != issuer);
    }

    /// The fetched set of `issuer`, if any.
    pub fn fetched(&self, issuer: &str) -> Option<&FetchedKeySet> {
        self.fetched
            .iter()
            .find(|(i, _)| i == issuer)
            .map(|(_, s)| s)
    }

    /// Adds a generated signing key (replacing one with the same `kid`).
    pub fn add_generated(&mut self, key: Arc<SigningKey>) {
        self.generated.retain(|k| k.kid() != key.kid());
        self.generated.push(key);
    }

    /// The generated key with this `kid`.
    pub fn generated(&self, kid: &str) -> Option<&SigningKey> {
        self.generated
            .iter()
            .find(|k| k.kid() == kid)
            .map(|k| k.as_ref())
    }

    /// Generates every key `policy` asks to generate that this snapshot lacks, from
    /// `entropy`: for a single process (the CLI, tests). The filter's workers share theirs
    /// through shared data instead, so that all sign with one key.
    pub fn generate_missing(
        &mut self,
        policy: &Policy,
        entropy: &mut dyn Entropy,
    ) -> Result<(), SignError> {
        for entry in &policy.signing_keys {
            let KeyMaterial::Generated(alg) = entry.material else {
                continue;
            };
            if self.generated(&entry.kid).is_none() {
                let (key, _) = SigningKey::generate(alg, &entry.kid, entropy)?;
                self.add_generated(Arc::new(key));
            }
        }
        Ok(())
    }

    /// The gateway key `kid` of `policy`: configured, or generated and in this snapshot.
    pub fn signing_key<'a>(&'a self, policy: &'a Policy, kid: &str) -> Option<&'a SigningKey> {
        let entry = policy.signing_keys.iter().find(|k| k.kid == kid)?;
        match &entry.material {
            KeyMaterial::Configured(k) => Some(k),
            KeyMaterial::Generated(_) => self.generated(kid),
        }
    }

    /// The key that signs under `policy`: its active key, from the policy or generated.
    pub fn signer<'a>(&'a self, policy: &'a Policy) -> Option<&'a SigningKey> {
        let active = policy.active_key()?;
        match &active.material {
            KeyMaterial::Configured(k) => Some(k),
            KeyMaterial::Generated(_) => self.generated(&active.kid),
        }
    }

    /// The fetched keys of `issuer` still in use at `now` (seconds): `None` when it has a
    /// key source but nothing fresh enough (never fetched, or stale beyond
    /// `jwks_max_stale_seconds`); an empty slice when it has no key source.
    pub fn usable<'a>(&'a self, issuer: &TrustedIssuer, now: u64) -> Option<&'a [IssuerKey]> {
        let Some(source) = &issuer.key_source else {
            return Some(&[]);
        };
        let set = self.fetched(&issuer.issuer)?;
        let stale_at = set
            .fetched_at_ms
            .saturating_add(source.max_stale_seconds.saturating_mul(1000));
        (now.saturating_mul(1000) < stale_at).then_some(set.keys.as_slice())
    }

    /// The key of `issuer` a token with this `kid` (or none) is verified with at `now`:
    /// inline keys first, then fetched ones.
    pub fn select<'a>(
        &'a self,
        issuer: &'a TrustedIssuer,
        kid: Option<&str>,
        now: u64,
    ) -> Result<&'a IssuerKey, KeyMiss> {
        let fetched = self.usable(issuer, now);
        let all = || issuer.keys.iter().chain(fetched.unwrap_or(&[]).iter());
        let found = match kid {
            Some(kid) => issuer
                .inline_key(kid)
                .or_else(|| fetched.unwrap_or(&[]).iter().find(|k| k.kid() == Some(kid))),
            None => {
                let mut keys = all();
                match (keys.next(), keys.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        };
        match (found, fetched) {
            (Some(key), _) => Ok(key),
            (None, None) => Err(KeyMiss::Unavailable),
            (None, Some(_)) => Err(KeyMiss::UnknownKid),
        }
    }
}
