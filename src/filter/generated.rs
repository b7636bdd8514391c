//! Generated signing keys (`{"generate": "EdDSA"}`): made once, shared by every worker VM.
//!
//! The first worker to configure generates the key and stores its private JWK in shared
//! data with an atomic create ([`SharedStore::create`]); every worker, that one included,
//! then re-reads the stored key and adopts it. No worker signs with a key it has not read
//! back, so two workers racing at start still sign with one key and publish one key set.
//! The key lives only in the host's memory: it is lost on restart (and on Kong's
//! `nginx -s reload`, which wipes shared data), so tokens it signed stop verifying; fine
//! for demos and a single gateway, not for fleets (give those a key in the policy).

use std::sync::Arc;

use super::abi::{self, Level};
use super::env::HostEntropy;
use super::shared::{SharedStore, PREFIX};
use crate::core::config::Policy;
use crate::core::json::parse_strict;
use crate::core::keyset::KeySnapshot;
use crate::core::signing::{KeyMaterial, SigningKey};

/// Adopts every generated key of `policy` into `snapshot` (generating those nobody has).
/// An error (no randomness, shared data failing) refuses the configuration: the filter
/// never signs with a key the other workers may not have.
pub fn adopt(
    policy: &Policy,
    store: &mut SharedStore,
    snapshot: &mut KeySnapshot,
) -> Result<(), String> {
    for entry in &policy.signing_keys {
        let KeyMaterial::Generated(alg) = entry.material else {
            continue;
        };
        if snapshot
            .generated(&entry.kid)
            .is_some_and(|k| k.alg() == alg)
        {
            continue;
        }
        let key = format!("{PREFIX}generated/{}/{}", alg.name(), entry.kid);
        let failed = |s: abi::HostStatus| format!("shared data failed (host status {})", s.0);
        let mut created = false;
        let stored = match store.get(&key).map_err(failed)? {
            Some((jwk, _)) => jwk,
            None => {
                let (_, jwk) = SigningKey::generate(alg, &entry.kid, &mut HostEntropy)
                    .map_err(|_| format!("cannot generate signing key {:?}", entry.kid))?;
                let ours = jwk.to_string().into_bytes();
                store.create(&key, &ours).map_err(failed)?;
                // Adopt what is stored: ours, or a racing worker's.
                let stored = store
                    .get(&key)
                    .map_err(failed)?
                    .ok_or_else(|| format!("generated key {:?} not stored", entry.kid))?
                    .0;
                created = stored == ours;
                stored
            }
        };
        let signing = parse_strict(&stored, 4)
            .ok()
            .and_then(|jwk| SigningKey::from_jwk(&jwk, false).ok())
            .filter(|k| k.kid() == entry.kid && k.alg() == alg)
            .ok_or_else(|| format!("the shared generated key {:?} is unusable", entry.kid))?;
        abi::log(
            Level::Info,
            &format!(
                "token-exchange-filter: signing key {:?} ({}) {}{}; it is lost on restart",
                entry.kid,
                alg.name(),
                if created { "generated" } else { "adopted" },
                if store.is_shared() {
                    " and shared by every worker"
                } else {
                    " for this worker only (no shared data on this host)"
                },
            ),
        );
        snapshot.add_generated(Arc::new(signing));
    }
    Ok(())
}
