//! The clients file: named clients, each with the SHA-256 of its token and its topic rules.
//!
//! ```toml
//! [alice]
//! token_sha256 = "…64 hex digits…"     # `emberws token alice` makes a token and this line
//! publish = ["devices/{name}/#"]
//! subscribe = ["devices/{name}/#", "public/#"]
//! ```
//!
//! The file never holds a token, only its hash: reading it gives no one a way in.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::acl::{valid_name, Rules};
use crate::secret::TokenHash;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    token_sha256: toml::Spanned<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
}

/// Who a connection is: a named client, or anonymous (no token, where that is allowed).
/// Shared by every connection of the client: its rules are compiled once.
#[derive(Debug, PartialEq, Eq)]
pub struct Client {
    name: Option<Box<str>>,
    hash: Option<TokenHash>,
    pub rules: Rules,
}

impl Client {
    /// The anonymous client with these rules.
    pub fn anonymous(rules: Rules) -> Arc<Client> {
        Arc::new(Client {
            name: None,
            hash: None,
            rules,
        })
    }

    /// The client's name; `None` for anonymous.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The same client (name and token) with, perhaps, other rules.
    pub fn same_credentials(&self, other: &Client) -> bool {
        self.name == other.name && self.hash == other.hash
    }
}

/// Every client of the clients file.
#[derive(Debug, Default)]
pub struct Clients {
    list: Vec<Arc<Client>>,
}

impl Clients {
    /// Reads and checks a clients file.
    pub fn load(path: &Path) -> Result<Clients, String> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
        Clients::parse(&src, &path.display().to_string())
    }

    /// Parses a clients file's text; `origin` names it in errors (`origin:line: what`).
    pub fn parse(src: &str, origin: &str) -> Result<Clients, String> {
        let at = |span: Option<std::ops::Range<usize>>| {
            let line = span.map_or(1, |s| line_of(src, s.start));
            format!("{origin}:{line}")
        };
        let entries: BTreeMap<toml::Spanned<String>, Entry> =
            toml::from_str(src).map_err(|e| format!("{}: {}", at(e.span()), e.message()))?;
        let mut list: Vec<Arc<Client>> = Vec::with_capacity(entries.len());
        for (name, entry) in entries {
            let here = at(Some(name.span()));
            let name = name.into_inner();
            if !valid_name(&name) {
                return Err(format!(
                    "{here}: '{name}' is not a client name: use 1 to 64 letters, digits, '-', '_' or '.'"
                ));
            }
            let hash = TokenHash::from_hex(entry.token_sha256.get_ref()).ok_or_else(|| {
                format!(
                    "{}: token_sha256 of '{name}' must be 64 hex digits (made by `emberws token {name}`)",
                    at(Some(entry.token_sha256.span()))
                )
            })?;
            if list
                .iter()
                .any(|c| c.hash.is_some_and(|h| h.matches(&hash)))
            {
                return Err(format!("{here}: '{name}' has the token of another client"));
            }
            let rules = Rules::compile(Some(&name), &entry.publish, &entry.subscribe)
                .map_err(|e| format!("{here}: a rule of '{name}': {e}"))?;
            list.push(Arc::new(Client {
                name: Some(name.into()),
                hash: Some(hash),
                rules,
            }));
        }
        Ok(Clients { list })
    }

    /// The client whose token this is. Every stored hash is compared, in constant time, so
    /// the answer takes as long for a near miss as for a wild guess.
    pub fn find(&self, token: &str) -> Option<&Arc<Client>> {
        if token.is_empty() {
            return None;
        }
        let hash = TokenHash::of(token);
        let mut found = None;
        for client in &self.list {
            if client.hash.is_some_and(|h| h.matches(&hash)) {
                found = Some(client);
            }
        }
        found
    }

    /// The client of this name now, if it is still in the file.
    pub fn named(&self, name: &str) -> Option<&Arc<Client>> {
        self.list.iter().find(|c| c.name() == Some(name))
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }
}

/// The 1-based line of byte `offset` in `src`: where a TOML error is reported, in this file
/// and in the config file.
pub fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, token: &str, rules: &str) -> String {
        format!(
            "[{name}]\ntoken_sha256 = \"{}\"\n{rules}\n",
            TokenHash::of(token).to_hex()
        )
    }

    #[test]
    fn a_token_finds_its_client_and_its_compiled_rules() {
        let src = entry("alice", "tok-a", "publish = [\"devices/{name}/#\"]")
            + &entry("bob", "tok-b", "subscribe = [\"#\"]");
        let clients = Clients::parse(&src, "clients.toml").unwrap();
        assert_eq!(clients.len(), 2);
        let alice = clients.find("tok-a").unwrap();
        assert_eq!(alice.name(), Some("alice"));
        assert!(alice.rules.may_publish("devices/alice/t"));
        assert!(!alice.rules.may_publish("devices/bob/t"));
        assert!(
            alice.rules.grant("#").is_empty(),
            "no subscribe rule: nothing"
        );
        assert_eq!(clients.find("tok-b").unwrap().name(), Some("bob"));
        assert!(clients.find("tok-c").is_none());
        assert!(clients.find("").is_none());
        assert!(clients
            .named("bob")
            .unwrap()
            .same_credentials(clients.find("tok-b").unwrap()));
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let bad = [
            (
                entry("alice", "t", "publish = [\"a/#/b\"]"),
                "clients.toml:1:",
            ),
            (
                "[alice]\ntoken_sha256 = \"abc\"\n".to_owned(),
                "clients.toml:2:",
            ),
            (
                entry("alice", "t", "") + "[\"a b\"]\ntoken_sha256 = \"x\"\n",
                "clients.toml:4:",
            ),
            (entry("alice", "t", "subscrbe = [\"#\"]"), "clients.toml:"),
            (
                entry("a", "same", "") + &entry("b", "same", ""),
                "clients.toml:4:",
            ),
            ("[alice]\npublish = [\"#\"]\n".to_owned(), "clients.toml:1:"),
            ("not toml".to_owned(), "clients.toml:1:"),
        ];
        for (src, want) in bad {
            let err = Clients::parse(&src, "clients.toml").unwrap_err();
            assert!(err.starts_with(want), "{err} (wanted {want}) for\n{src}");
        }
        let unknown = Clients::parse(&entry("alice", "t", "subscrbe = [\"#\"]"), "c").unwrap_err();
        assert!(
            unknown.starts_with("c:3:") && unknown.contains("subscrbe"),
            "{unknown}"
        );
    }

    #[test]
    fn the_shipped_example_loads_with_its_documented_rules() {
        let example = include_str!("../../../../clients.example.toml");
        let clients = Clients::parse(example, "clients.example.toml").unwrap();
        assert_eq!(clients.len(), 3);
        let sensor = clients.named("greenhouse-1").unwrap();
        assert!(sensor.rules.may_publish("devices/greenhouse-1/temp"));
        assert!(!sensor.rules.may_publish("devices/other/temp"));
        let dash = clients.named("dashboard").unwrap();
        assert_eq!(dash.rules.grant("#"), ["devices/+/#", "public/#"]);
        assert_eq!(dash.rules.grant("$SYS/#"), ["$SYS/#"]);
        assert!(sensor.rules.grant("$SYS/#").is_empty());
        assert!(!dash.rules.may_publish("public/x"));
        let alerts = clients.named("alerts").unwrap();
        assert_eq!(alerts.rules.grant("devices/#"), ["devices/+/temp"]);
    }

    #[test]
    fn the_hash_is_never_printed() {
        let clients = Clients::parse(&entry("alice", "secret-token", ""), "c").unwrap();
        let shown = format!("{clients:?}");
        assert!(
            !shown.contains(&TokenHash::of("secret-token").to_hex()),
            "{shown}"
        );
    }
}
