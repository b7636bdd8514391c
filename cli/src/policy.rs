//! Loading a policy file with the core's parser, and the request a command describes.
//!
//! A command may change the policy *document* for one run (replace an inline-keyed trusted
//! issuer's keys by a test key, sign with a generated key); the changed document is then parsed and validated
//! whole by `Policy::from_json`, exactly as the filter would, and every change is reported.

use serde_json::{json, Value};
use token_exchange_filter::core::{ConfigErrors, Policy, RequestHead};

use crate::input::{parse_json, read_text, InputError};

/// A change made to the policy document for this run only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentChange {
    /// The trusted issuer's `jwks` is replaced by one test key.
    IssuerKeys {
        /// The trusted issuer.
        issuer: String,
        /// The key's `kid`.
        kid: Option<String>,
    },
    /// `signing_keys` is replaced by one generated key.
    GeneratedSigningKey {
        /// Its `kid`.
        kid: String,
    },
}

impl DocumentChange {
    /// What was changed, for a note in the output.
    pub fn note(&self) -> String {
        match self {
            DocumentChange::IssuerKeys { issuer, kid } => format!(
                "keys of trusted issuer {issuer:?} replaced for this run by test key {}",
                kid.as_deref()
                    .map_or("(no kid)".to_owned(), |k| format!("{k:?}"))
            ),
            DocumentChange::GeneratedSigningKey { kid } => {
                format!("signing_keys replaced for this run by a generated key {kid:?}")
            }
        }
    }
}

/// A policy document read from a file, before validation.
pub struct PolicyDocument {
    /// Where it was read from.
    pub path: String,
    doc: Value,
    /// What this run changed.
    pub changes: Vec<DocumentChange>,
}

impl PolicyDocument {
    /// Reads `path` (strict JSON: duplicate member names refused).
    pub fn read(path: &str) -> Result<PolicyDocument, InputError> {
        let text = read_text(path, "policy")?;
        let doc = parse_json(&text, &format!("policy {path}"))?;
        Ok(PolicyDocument {
            path: path.to_owned(),
            doc,
            changes: Vec::new(),
        })
    }

    /// Replaces the key set of trusted issuer `issuer` by `public_jwk`.
    pub fn replace_issuer_keys(
        &mut self,
        issuer: &str,
        public_jwk: Value,
    ) -> Result<(), InputError> {
        let entry = self
            .doc
            .get_mut("trusted_issuers")
            .and_then(Value::as_array_mut)
            .and_then(|list| {
                list.iter_mut()
                    .find(|t| t.get("issuer").and_then(Value::as_str) == Some(issuer))
            })
            .and_then(Value::as_object_mut)
            .ok_or_else(|| {
                InputError(format!(
                    "{issuer:?} is not a trusted issuer of policy {}",
                    self.path
                ))
            })?;
        if entry.contains_key("jwks_uri") || entry.get("discovery") == Some(&Value::Bool(true)) {
            // Test keys inline beside a key source would be a policy the filter never runs.
            return Err(InputError(format!(
                "trusted issuer {issuer:?} fetches its keys (jwks_uri or discovery): supply the key set the filter would fetch instead (explain --jwks, a case file's fetched)"
            )));
        }
        let kid = public_jwk
            .get("kid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        entry.insert("jwks".into(), json!({ "keys": [public_jwk] }));
        self.changes.push(DocumentChange::IssuerKeys {
            issuer: issuer.to_owned(),
            kid,
        });
        Ok(())
    }

    /// Replaces `signing_keys` by one private JWK.
    pub fn replace_signing_keys(&mut self, private_jwk: Value, kid: &str) {
        if let Some(obj) = self.doc.as_object_mut() {
            obj.insert("signing_keys".into(), json!([private_jwk]));
        }
        self.changes.push(DocumentChange::GeneratedSigningKey {
            kid: kid.to_owned(),
        });
    }

    /// Parses and validates the (changed) document with the filter's parser.
    pub fn parse(&self) -> Result<Policy, ConfigErrors> {
        Policy::from_json(self.doc.to_string().as_bytes())
    }

    /// Parses it for a command that needs a valid policy: errors become one input error.
    pub fn load(&self) -> Result<Policy, InputError> {
        errors_as_input(&self.path, self.parse())
    }

    /// Whether any rule is in shadow mode (`"mode": "shadow"`).
    pub fn has_shadow_rules(&self) -> bool {
        self.rules()
            .any(|r| r.get("mode").and_then(Value::as_str) == Some("shadow"))
    }

    fn rules(&self) -> impl Iterator<Item = &Value> {
        self.doc
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }

    /// The same policy with every rule enforced: what its shadow rules would do if they were
    /// not in shadow mode (`mode` is the only difference; the filter decides the rest).
    pub fn load_enforcing(&self) -> Result<Policy, InputError> {
        let mut doc = self.doc.clone();
        if let Some(rules) = doc.get_mut("rules").and_then(Value::as_array_mut) {
            for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
                rule.remove("mode");
            }
        }
        errors_as_input(&self.path, Policy::from_json(doc.to_string().as_bytes()))
    }
}

/// A parse result for a command that needs a valid policy: errors become one input error.
fn errors_as_input(path: &str, parsed: Result<Policy, ConfigErrors>) -> Result<Policy, InputError> {
    {
        parsed.map_err(|errors| {
            let list: Vec<String> = errors
                .0
                .iter()
                .map(|e| {
                    if e.path.is_empty() {
                        e.message.clone()
                    } else {
                        format!("{}: {}", e.path, e.message)
                    }
                })
                .collect();
            InputError(format!(
                "policy {} is invalid ({} error(s); `token-exchange check` lists them): {}",
                path,
                list.len(),
                list.join("; ")
            ))
        })
    }
}

/// The request a command describes, in the terms of the CLI's options.
#[derive(Debug, Clone, Default)]
pub struct RequestSpec {
    /// `:method`.
    pub method: String,
    /// `:path`, query included.
    pub path: String,
    /// `Host`.
    pub host: Option<String>,
    /// The gateway's route name (Envoy `xds.route_name`).
    pub route: Option<String>,
    /// More headers, in order (any name, also more `Authorization` headers).
    pub headers: Vec<(String, String)>,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl RequestSpec {
    /// The request as the filter reads it (the core's own header reading).
    pub fn head(&self) -> RequestHead {
        let mut pairs: Vec<(String, String)> = vec![
            (":method".into(), self.method.clone()),
            (":path".into(), self.path.clone()),
        ];
        if let Some(h) = &self.host {
            pairs.push(("host".into(), h.clone()));
        }
        pairs.extend(self.headers.iter().cloned());
        if let Some(t) = &self.token {
            pairs.push(("authorization".into(), format!("Bearer {t}")));
        }
        let mut head = RequestHead::from_headers(pairs);
        head.route_name = self.route.clone();
        head
    }
}

/// A token argument: trimmed; refused when empty or when no HTTP header could carry it.
pub fn check_token_text(token: &str, what: &str) -> Result<String, InputError> {
    let t = token.trim();
    if t.is_empty() {
        return Err(InputError(format!("{what}: empty token")));
    }
    if t.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(InputError(format!(
            "{what}: a token must be printable ASCII (no header can carry this one)"
        )));
    }
    Ok(t.to_owned())
}

/// A `Name: value` header argument (`:authority: h` for a pseudo-header).
pub fn parse_header_arg(arg: &str) -> Result<(String, String), InputError> {
    let bad = || InputError(format!("bad header {arg:?}: use \"Name: value\""));
    let (pseudo, rest) = match arg.strip_prefix(':') {
        Some(r) => (true, r),
        None => (false, arg),
    };
    let (name, value) = rest.split_once(':').ok_or_else(bad)?;
    let name = name.trim();
    if name.is_empty() {
        return Err(bad());
    }
    let name = if pseudo {
        format!(":{name}")
    } else {
        name.to_owned()
    };
    Ok((name, value.trim_start().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_arguments() {
        assert_eq!(
            parse_header_arg("X-Request-Id: r-1").unwrap(),
            ("X-Request-Id".into(), "r-1".into())
        );
        assert_eq!(
            parse_header_arg(":authority: api.example.com").unwrap(),
            (":authority".into(), "api.example.com".into())
        );
        assert_eq!(
            parse_header_arg("authorization:Bearer  x").unwrap(),
            ("authorization".into(), "Bearer  x".into())
        );
        assert!(parse_header_arg("no colon").is_err());
        assert!(parse_header_arg(": x").is_err());
    }

    #[test]
    fn the_request_is_read_by_the_core() {
        let spec = RequestSpec {
            method: "GET".into(),
            path: "/orders/1".into(),
            host: Some("api.example.com".into()),
            route: Some("orders".into()),
            headers: vec![("content-type".into(), "application/grpc".into())],
            token: Some("a.b.c".into()),
        };
        let head = spec.head();
        assert!(head.grpc);
        let req = head.request();
        assert_eq!(req.authorization, ["Bearer a.b.c"]);
        assert_eq!(req.route_name, Some("orders"));
        assert_eq!(req.host, Some("api.example.com"));
    }

    #[test]
    fn tokens_are_trimmed_and_must_fit_a_header() {
        assert_eq!(check_token_text(" a.b.c\n", "t").unwrap(), "a.b.c");
        assert!(check_token_text("  ", "t").is_err());
        assert!(check_token_text("a.b\u{7}.c", "t").is_err());
        assert!(check_token_text("a.é.c", "t").is_err());
    }
}
