//! Reviewing a valid policy as a whole: rules that can never apply because an earlier rule
//! always matches first (first match wins, there is no fall-through), and rules that match
//! no request at all. Pure, on the same matching code the decision uses, so a review can
//! never disagree with what the filter does.

use std::fmt;

use super::config::{Policy, RouteMatch};
use super::decide::{host_matches, is_under_prefix};

/// Something a reviewer should know about a rule of a valid policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleFinding {
    /// Every request rule `rule` matches is matched first by the earlier rule `by`: it never
    /// applies. Indexes into `Policy::rules`.
    Shadowed {
        /// The rule that never applies.
        rule: usize,
        /// The earlier rule that takes its requests.
        by: usize,
    },
    /// The rule's exact `path` is outside its own `path_prefix`: no request matches it.
    MatchesNothing {
        /// The rule.
        rule: usize,
    },
}

impl RouteMatch {
    /// Whether `self` matches every request `other` matches (on the conditions alone).
    pub fn covers(&self, other: &RouteMatch) -> bool {
        if other.matches_nothing() {
            return true;
        }
        let paths = match (&self.path, &self.path_prefix) {
            (Some(exact), _) if other.path.as_ref() != Some(exact) => false,
            (_, Some(prefix)) => match (&other.path, &other.path_prefix) {
                (Some(exact), _) => is_under_prefix(exact, prefix),
                (None, Some(inner)) => is_under_prefix(inner, prefix),
                (None, None) => false,
            },
            _ => true,
        };
        let methods = self.methods.is_empty()
            || (!other.methods.is_empty()
                && other.methods.iter().all(|m| self.methods.contains(m)));
        let host = match (&self.host, &other.host) {
            (None, _) => true,
            (Some(_), None) => false,
            // A rule without a port takes every port; one with a port takes only that one.
            (Some(mine), Some(theirs)) if mine.contains(':') => mine == theirs,
            (Some(mine), Some(theirs)) => host_matches(mine, theirs),
        };
        let route = match (&self.route, &other.route) {
            (None, _) => true,
            (Some(mine), theirs) => theirs.as_ref() == Some(mine),
        };
        paths && methods && host && route
    }

    /// Whether no request can match: an exact path outside the rule's own prefix.
    pub fn matches_nothing(&self) -> bool {
        match (&self.path, &self.path_prefix) {
            (Some(exact), Some(prefix)) => !is_under_prefix(exact, prefix),
            _ => false,
        }
    }
}

impl Policy {
    /// Rules that never apply, in rule order (the first earlier rule that covers each).
    pub fn rule_findings(&self) -> Vec<RuleFinding> {
        let mut findings = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matcher.matches_nothing() {
                findings.push(RuleFinding::MatchesNothing { rule: i });
                continue;
            }
            let earlier = self.rules.iter().take(i).enumerate();
            if let Some((by, _)) = earlier
                .filter(|(_, e)| !e.matcher.matches_nothing())
                .find(|(_, e)| e.matcher.covers(&rule.matcher))
            {
                findings.push(RuleFinding::Shadowed { rule: i, by });
            }
        }
        findings
    }
}

impl fmt::Display for RuleFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleFinding::Shadowed { rule, by } => write!(
                f,
                "rules[{rule}] is shadowed by rules[{by}]: every request it matches, the earlier rule matches first"
            ),
            RuleFinding::MatchesNothing { rule } => write!(
                f,
                "rules[{rule}] matches no request: its path is outside its path_prefix"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decide::HttpRequest;

    fn m(
        prefix: Option<&str>,
        path: Option<&str>,
        methods: &[&str],
        host: Option<&str>,
    ) -> RouteMatch {
        RouteMatch {
            path_prefix: prefix.map(str::to_owned),
            path: path.map(str::to_owned),
            methods: methods.iter().map(|s| (*s).to_owned()).collect(),
            host: host.map(str::to_owned),
            route: None,
        }
    }

    #[test]
    fn prefixes_cover_what_lies_under_them_by_segment() {
        let orders = m(Some("/orders"), None, &[], None);
        assert!(orders.covers(&m(Some("/orders/admin"), None, &["GET"], None)));
        assert!(orders.covers(&m(Some("/orders/"), None, &[], None)));
        assert!(orders.covers(&m(None, Some("/orders"), &[], None)));
        assert!(!orders.covers(&m(Some("/orders-admin"), None, &[], None)));
        assert!(!orders.covers(&m(None, None, &[], None)));
        // "/orders/" does not take "/orders" itself.
        assert!(!m(Some("/orders/"), None, &[], None).covers(&orders));
        let everything = m(None, None, &[], None);
        assert!(everything.covers(&orders));
        assert!(!m(None, Some("/status"), &[], None).covers(&m(Some("/status"), None, &[], None)));
    }

    #[test]
    fn methods_hosts_and_routes_must_be_at_least_as_wide() {
        let get = m(Some("/a"), None, &["GET", "HEAD"], None);
        assert!(get.covers(&m(Some("/a"), None, &["GET"], None)));
        assert!(!get.covers(&m(Some("/a"), None, &["GET", "POST"], None)));
        assert!(!get.covers(&m(Some("/a"), None, &[], None)));
        let host = m(None, None, &[], Some("api.example.com"));
        assert!(host.covers(&m(None, None, &[], Some("api.example.com:8443"))));
        assert!(!host.covers(&m(None, None, &[], None)));
        let with_port = m(None, None, &[], Some("api.example.com:8443"));
        assert!(!with_port.covers(&host));
        let mut routed = m(None, None, &[], None);
        routed.route = Some("orders".into());
        assert!(!routed.covers(&m(None, None, &[], None)));
        assert!(m(None, None, &[], None).covers(&routed));
    }

    #[test]
    fn a_covering_rule_matches_every_request_of_the_covered_one() {
        // The review agrees with the decision's own matching on concrete requests.
        let wide = m(
            Some("/orders"),
            None,
            &["GET", "POST"],
            Some("api.example.com"),
        );
        let narrow = m(
            Some("/orders/1"),
            None,
            &["GET"],
            Some("api.example.com:443"),
        );
        assert!(wide.covers(&narrow));
        for path in ["/orders/1", "/orders/1/items"] {
            let req = HttpRequest {
                method: "GET",
                path,
                host: Some("API.example.com:443"),
                ..Default::default()
            };
            assert!(narrow.matches(&req, path));
            assert!(wide.matches(&req, path));
        }
    }

    #[test]
    fn an_exact_path_outside_its_prefix_matches_nothing() {
        let dead = m(Some("/a"), Some("/b"), &[], None);
        assert!(dead.matches_nothing());
        assert!(!m(Some("/a"), Some("/a/b"), &[], None).matches_nothing());
        let req = HttpRequest {
            method: "GET",
            path: "/b",
            ..Default::default()
        };
        assert!(!dead.matches(&req, "/b"));
    }
}
