//! Host-key checking for ssh remotes against an OpenSSH `known_hosts` file, as `ssh` does with
//! `StrictHostKeyChecking yes`: an unknown host or a changed key stops the connection, and nothing is ever added.
//!
//! Supported: plain and hashed (`|1|salt|hash`, Debian's default `HashKnownHosts yes`) host fields, `[host]:port`
//! for ports other than 22, comma-separated patterns with `*`, `?` and `!` negation, and `@revoked` lines.
//! `@cert-authority` lines are skipped (host certificates are not supported), so such hosts count as unknown.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The parsed lines of a known_hosts file.
#[derive(Debug, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    revoked: bool,
    hosts: Hosts,
    key: Vec<u8>,
}

#[derive(Debug)]
enum Hosts {
    Patterns(Vec<String>),
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

/// What the file says of a host and the key it presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The host is listed with this key.
    Known,
    /// The host is listed, but only with other keys: a changed key, or someone in the middle.
    Changed,
    /// The host is not listed.
    Unknown,
    /// The key is marked `@revoked`.
    Revoked,
}

// === impl KnownHosts ===

impl KnownHosts {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read known_hosts file {}: {e}", path.display()))?;
        Ok(Self::parse(&text))
    }

    /// Parses known_hosts text. Lines that are not `[marker] hosts keytype base64key [comment]` are skipped, as
    /// OpenSSH skips them.
    pub fn parse(text: &str) -> Self {
        let entries = text.lines().filter_map(parse_line).collect();
        Self { entries }
    }

    /// Checks `key` (the SSH wire-format public key blob the server sent) for `host` on `port`.
    pub fn check(&self, host: &str, port: u16, key: &[u8]) -> Verdict {
        let name = if port == 22 { host.to_owned() } else { format!("[{host}]:{port}") };
        let mut listed = false;
        for entry in self.entries.iter().filter(|e| e.hosts.matches(&name)) {
            if entry.revoked {
                if entry.key == key {
                    return Verdict::Revoked;
                }
                continue;
            }
            listed = true;
            if entry.key == key {
                return Verdict::Known;
            }
        }
        if listed {
            Verdict::Changed
        } else {
            Verdict::Unknown
        }
    }
}

/// The key's fingerprint as OpenSSH prints it: `SHA256:` and the unpadded base64 of its SHA-256.
pub fn fingerprint(key: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(key)))
}

fn parse_line(line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut hosts = fields.next()?;
    let mut revoked = false;
    if let Some(marker) = hosts.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            _ => return None,
        }
        hosts = fields.next()?;
    }
    let _key_type = fields.next()?;
    let key = STANDARD.decode(fields.next()?).ok()?;
    let hosts = match hosts.strip_prefix("|1|") {
        Some(hashed) => {
            let (salt, hash) = hashed.split_once('|')?;
            Hosts::Hashed { salt: STANDARD.decode(salt).ok()?, hash: STANDARD.decode(hash).ok()? }
        }
        None => Hosts::Patterns(hosts.split(',').map(str::to_owned).collect()),
    };
    Some(Entry { revoked, hosts, key })
}

// === impl Hosts ===

impl Hosts {
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else { return false };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Hosts::Patterns(patterns) => {
                let mut matched = false;
                for pattern in patterns {
                    match pattern.strip_prefix('!') {
                        // A matching negated pattern excludes the host whatever else matches.
                        Some(negated) if wildcard(negated, name) => return false,
                        Some(_) => {}
                        None => matched |= wildcard(pattern, name),
                    }
                }
                matched
            }
        }
    }
}

/// OpenSSH's pattern match: `*` any run, `?` one character, case-insensitive.
fn wildcard(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIHaGkq0Vv2y0L2Ayd8m3dHZVbJ2s7cQx4a2KzvZ1l5Zr";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBd3Y0B8c3G8wI9fM8dE1m3p8kq6x3e0x9h2y7Jm2nQp";

    fn key(text: &str) -> Vec<u8> {
        STANDARD.decode(text).unwrap()
    }

    #[test]
    fn plain_hosts_ports_patterns_and_negation() {
        let file = KnownHosts::parse(&format!(
            "# comment\n\ngit.example.com,10.0.0.1 ssh-ed25519 {KEY_A}\n[127.0.0.1]:2222 ssh-ed25519 {KEY_B} me@host\n\
             *.corp.example,!bad.corp.example ssh-ed25519 {KEY_A}\nnot a valid line\n"
        ));
        assert_eq!(file.check("git.example.com", 22, &key(KEY_A)), Verdict::Known);
        assert_eq!(file.check("GIT.example.com", 22, &key(KEY_A)), Verdict::Known, "host names ignore case");
        assert_eq!(file.check("10.0.0.1", 22, &key(KEY_B)), Verdict::Changed);
        assert_eq!(file.check("127.0.0.1", 2222, &key(KEY_B)), Verdict::Known);
        assert_eq!(file.check("127.0.0.1", 22, &key(KEY_B)), Verdict::Unknown, "port 22 is a different entry");
        assert_eq!(file.check("git.example.com", 2222, &key(KEY_A)), Verdict::Unknown);
        assert_eq!(file.check("a.corp.example", 22, &key(KEY_A)), Verdict::Known);
        assert_eq!(file.check("bad.corp.example", 22, &key(KEY_A)), Verdict::Unknown, "negated");
        assert_eq!(file.check("other.example", 22, &key(KEY_A)), Verdict::Unknown);
    }

    #[test]
    fn hashed_hosts_and_revoked_keys() {
        // Hashed as `ssh-keygen -H` does: base64(HMAC-SHA1(salt, "[127.0.0.1]:2222")).
        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash = STANDARD.encode(mac.finalize().into_bytes());
        let file = KnownHosts::parse(&format!(
            "|1|{}|{hash} ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n",
            STANDARD.encode(salt)
        ));
        assert_eq!(file.check("127.0.0.1", 2222, &key(KEY_A)), Verdict::Known);
        assert_eq!(file.check("127.0.0.2", 2222, &key(KEY_A)), Verdict::Unknown);
        assert_eq!(file.check("127.0.0.1", 2222, &key(KEY_B)), Verdict::Revoked);
    }

    #[test]
    fn fingerprints_read_like_openssh() {
        let fp = fingerprint(&key(KEY_A));
        assert!(fp.starts_with("SHA256:") && !fp.ends_with('='), "{fp}");
        assert_eq!(fp.len(), "SHA256:".len() + 43);
    }
}
