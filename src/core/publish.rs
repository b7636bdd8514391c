//! The documents the filter serves itself: the gateway's public keys at `jwks_path` (so
//! downstream verifiers can fetch them instead of being handed a copy) and a minimal OpenID
//! configuration at `discovery_path` (for verifiers that start from discovery).
//!
//! Only public halves are ever serialized (HS256 keys never: whoever can verify could mint),
//! retired keys only until the last token they signed has expired, and the documents are
//! built from the policy and the generated keys alone, never from the request (a `Host`
//! header cannot change what is served or cached).

use std::time::Duration;

use serde_json::{json, Value};

use super::audit::{AuditRecord, Outcome};
use super::config::Policy;
use super::decide::{path_only, HttpRequest};
use super::keyset::KeySnapshot;
use super::signing::KeyMaterial;
use super::url::HttpUrl;

/// A response the filter sends itself for a published document, and its audit record.
#[derive(Debug, Clone)]
pub struct Served {
    /// 200, or 405 for a method other than GET.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON document (empty on 405).
    pub body: String,
    /// What to log (exactly once).
    pub audit: AuditRecord,
}

impl Policy {
    /// The answer to `req` when it asks for `jwks_path` or `discovery_path` (compared with the
    /// path without its query); `None` for every other request.
    pub fn serve_published(
        &self,
        req: &HttpRequest<'_>,
        keys: &KeySnapshot,
        now: Duration,
    ) -> Option<Served> {
        let path = path_only(req.path);
        let publication = &self.publication;
        let jwks = publication.jwks_path.as_deref() == Some(path);
        let what = if jwks {
            "jwks"
        } else if publication.discovery_path.as_deref() == Some(path) {
            "openid_configuration"
        } else {
            return None;
        };
        let mut audit = self.blank_audit(req, now);
        audit.decision = Outcome::Serve;
        audit.reason = what;
        if req.method != "GET" {
            audit.status = Some(405);
            return Some(Served {
                status: 405,
                headers: vec![
                    ("allow", "GET".to_owned()),
                    ("cache-control", "no-store".to_owned()),
                ],
                body: String::new(),
                audit,
            });
        }
        audit.status = Some(200);
        let body = if jwks {
            self.published_jwks(keys, now.as_secs())
        } else {
            self.openid_configuration().unwrap_or(Value::Null)
        };
        Some(Served {
            status: 200,
            headers: vec![
                ("content-type", "application/json".to_owned()),
                (
                    "cache-control",
                    format!("public, max-age={}", publication.max_age_seconds),
                ),
            ],
            body: body.to_string(),
            audit,
        })
    }

    /// The JWK Set the gateway publishes at `now` (seconds): the public half of every active,
    /// published and not yet expired retired key, from the policy or generated.
    pub fn published_jwks(&self, keys: &KeySnapshot, now: u64) -> Value {
        let longest_ttl = self.longest_ttl_seconds();
        let published: Vec<Value> = self
            .signing_keys
            .iter()
            .filter(|k| k.published_at(now, longest_ttl))
            .filter_map(|k| match &k.material {
                KeyMaterial::Configured(key) => key.public_jwk(),
                KeyMaterial::Generated(_) => keys.generated(&k.kid).and_then(|g| g.public_jwk()),
            })
            .collect();
        json!({ "keys": published })
    }

    /// `{"issuer", "jwks_uri"}`, the minimal OpenID configuration served at
    /// `discovery_path`: `jwks_uri` is the issuer's origin followed by `jwks_path`. `None`
    /// unless both paths are set.
    pub fn openid_configuration(&self) -> Option<Value> {
        self.publication.discovery_path.as_ref()?;
        let jwks_path = self.publication.jwks_path.as_deref()?;
        let origin = HttpUrl::parse(&self.issuer).ok()?.origin();
        Some(json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{origin}{jwks_path}"),
        }))
    }
}
