//! Signed commits: only a branch head signed by a trusted key deploys.
//!
//! The operator names an SSH `allowed_signers` file (`--allowed-signers`, the format `git` reads through
//! `gpg.ssh.allowedSignersFile`; `man ssh-keygen`, ALLOWED SIGNERS): one key per line with the principals it speaks
//! for. Commits are signed with `git -c gpg.format=ssh commit -S` (what GitHub and GitLab show as Verified). The
//! signature (SSHSIG, namespace `git`) is verified with RustCrypto's `ssh-key` over the commit without its `gpgsig`
//! header, exactly the bytes `git verify-commit` checks. An entry's `namespaces=` must include `git` when present, and
//! `valid-after=`/`valid-before=` are compared with the commit's committer time, as git does. Certificate authorities
//! (`cert-authority`) are not supported: such lines are refused when the file is read.
//!
//! Optionally, signers per path (`--path-signers deploy/fraud.yaml=alice@example.com,bob@example.com`, a path or a
//! folder ending in `/`): a head that changes a matching file (against the last applied commit) must be signed by a
//! key whose principals include one of those listed. The head's signer vouches for the whole tree it signs.
//!
//! The head is verified after it is fetched and before anything it names is read or downloaded.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};
use ssh_key::{HashAlg, PublicKey, SshSig};

/// The largest allowed_signers file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The trusted keys, and who may change what.
#[derive(Debug, Clone, Default)]
pub struct SignerPolicy {
    /// The allowed signers; verification is on when this is `Some`.
    pub allowed: Option<AllowedSigners>,
    /// Paths (or folders ending in `/`) and the principals allowed to change them.
    pub paths: Vec<PathRule>,
}

/// Who may change a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// A path in the repository, or a folder ending in `/`.
    pub path: String,
    /// The principals (as written in the allowed_signers file) allowed to sign changes to it.
    pub principals: Vec<String>,
}

impl PathRule {
    /// Parses `path=principal[,principal...]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (path, principals) =
            text.split_once('=').ok_or_else(|| format!("{text:?}: expected PATH=PRINCIPAL[,PRINCIPAL...]"))?;
        let principals: Vec<String> =
            principals.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect();
        if path.is_empty() || principals.is_empty() {
            return Err(format!("{text:?}: expected PATH=PRINCIPAL[,PRINCIPAL...]"));
        }
        Ok(Self { path: path.trim_start_matches("./").to_owned(), principals })
    }

    fn matches(&self, path: &str) -> bool {
        match self.path.strip_suffix('/') {
            Some(folder) => path.starts_with(folder) && path[folder.len()..].starts_with('/'),
            None => path == self.path,
        }
    }
}

/// The entries of an allowed_signers file.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    file: PathBuf,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    principals: Vec<String>,
    namespaces: Option<Vec<String>>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
    key: PublicKey,
}

/// Who signed a verified head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The principals of the allowed_signers entry whose key made the signature.
    pub principals: Vec<String>,
    /// The key's fingerprint, `SHA256:...`.
    pub fingerprint: String,
}

impl AllowedSigners {
    /// Reads an allowed_signers file. Errors name the line.
    pub fn load(file: &Path) -> Result<Self, String> {
        use std::io::Read;
        let shown = file.display();
        let opened = crate::durable::open_regular(file).map_err(|e| format!("allowed signers {shown}: {e}"))?;
        let mut text = String::new();
        opened
            .take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("allowed signers {shown}: {e}"))?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(format!("allowed signers {shown} is larger than {MAX_FILE_BYTES} bytes"));
        }
        Self::parse(&text, file)
    }

    /// Parses the text of an allowed_signers file; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = parse_line(line).map_err(|e| format!("allowed signers {}:{}: {e}", file.display(), n + 1))?;
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(format!("allowed signers {} lists no key", file.display()));
        }
        Ok(Self { file: file.to_owned(), entries })
    }

    /// Verifies `commit`'s signature. `Err` is the reason the commit is refused.
    pub fn verify(&self, repo: &Repository, commit: Oid) -> Result<Signer, String> {
        let (signature, signed) = match repo.extract_signature(&commit, None) {
            Ok(parts) => parts,
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                return Err(format!(
                    "commit {commit} is not signed; --allowed-signers requires the branch head to be signed with an \
                     SSH key it lists (git -c gpg.format=ssh commit -S)"
                ))
            }
            Err(e) => return Err(format!("commit {commit}: reading its signature failed: {e}")),
        };
        let armored = std::str::from_utf8(&signature).unwrap_or_default();
        if armored.contains("BEGIN PGP SIGNATURE") {
            return Err(format!(
                "commit {commit} is signed with OpenPGP; only SSH signatures are verified (gpg.format=ssh)"
            ));
        }
        let sshsig = SshSig::from_pem(armored.trim())
            .map_err(|e| format!("commit {commit}: its signature is not an SSH signature: {e}"))?;
        let fingerprint = sshsig.public_key().fingerprint(HashAlg::Sha256).to_string();
        let time = repo.find_commit(commit).map(|c| c.committer().when().seconds()).unwrap_or_default();
        let candidates: Vec<&Entry> = self.entries.iter().filter(|e| e.key.key_data() == sshsig.public_key()).collect();
        if candidates.is_empty() {
            return Err(format!(
                "commit {commit} is signed by key {fingerprint}, which {} does not list",
                self.file.display()
            ));
        }
        let mut why = String::new();
        for entry in candidates {
            if entry.namespaces.as_ref().is_some_and(|ns| !ns.iter().any(|n| n == "git")) {
                why = format!("key {fingerprint} is listed for other namespaces than git");
                continue;
            }
            if entry.valid_after.is_some_and(|after| time < after)
                || entry.valid_before.is_some_and(|before| time > before)
            {
                why = format!("key {fingerprint} is not valid at the commit's time ({time})");
                continue;
            }
            return match entry.key.verify("git", &signed, &sshsig) {
                Ok(()) => Ok(Signer { principals: entry.principals.clone(), fingerprint }),
                Err(e) => Err(format!("commit {commit}: the signature by key {fingerprint} does not verify: {e}")),
            };
        }
        Err(format!("commit {commit} is refused: {why}"))
    }
}

impl SignerPolicy {
    /// Whether verification is on.
    pub fn enabled(&self) -> bool {
        self.allowed.is_some()
    }

    /// Verifies the head and, for each path rule, that its signer may change the files it changes against
    /// `applied` (every file when nothing was applied yet). `Ok(None)` when verification is off.
    pub fn check(&self, repo: &Repository, head: Oid, applied: Option<Oid>) -> Result<Option<Signer>, String> {
        let Some(allowed) = &self.allowed else { return Ok(None) };
        let signer = allowed.verify(repo, head)?;
        if self.paths.is_empty() {
            return Ok(Some(signer));
        }
        let tree = |commit: Oid| repo.find_commit(commit).and_then(|c| c.tree());
        let new = tree(head).map_err(|e| format!("commit {head}: {e}"))?;
        let old = applied.and_then(|c| tree(c).ok());
        let diff = repo.diff_tree_to_tree(old.as_ref(), Some(&new), None).map_err(|e| format!("commit {head}: {e}"))?;
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                let Some(path) = file.path().and_then(Path::to_str) else { continue };
                for rule in self.paths.iter().filter(|r| r.matches(path)) {
                    if !signer.principals.iter().any(|p| rule.principals.contains(p)) {
                        return Err(format!(
                            "commit {head} changes {path}, which only {} may change; it is signed by {} ({})",
                            rule.principals.join(", "),
                            signer.principals.join(", "),
                            signer.fingerprint
                        ));
                    }
                }
            }
        }
        Ok(Some(signer))
    }
}

/// One allowed_signers line: `principals [options] keytype base64 [comment]`.
fn parse_line(line: &str) -> Result<Entry, String> {
    let (principals, rest) = field(line)?;
    let principals: Vec<String> = principals.split(',').map(str::to_owned).collect();
    let rest = rest.trim_start();
    let is_key_type = |s: &str| s.starts_with("ssh-") || s.starts_with("ecdsa-sha2-") || s.starts_with("sk-");
    let (options, key) = if is_key_type(rest) { ("", rest) } else { field(rest)? };
    let mut entry =
        Entry { principals, namespaces: None, valid_after: None, valid_before: None, key: parse_key(key.trim())? };
    for option in split_options(options) {
        let (name, value) = option.split_once('=').map_or((option.as_str(), None), |(n, v)| (n, Some(v)));
        let value = value.map(|v| v.trim_matches('"'));
        match (name.to_ascii_lowercase().as_str(), value) {
            ("namespaces", Some(v)) => entry.namespaces = Some(v.split(',').map(str::to_owned).collect()),
            ("valid-after", Some(v)) => entry.valid_after = Some(parse_time(v)?),
            ("valid-before", Some(v)) => entry.valid_before = Some(parse_time(v)?),
            ("cert-authority", _) => {
                return Err("cert-authority entries are not supported; list each signer's key".to_owned())
            }
            (other, _) => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(entry)
}

fn parse_key(text: &str) -> Result<PublicKey, String> {
    PublicKey::from_openssh(text).map_err(|e| format!("not an OpenSSH public key ({e})"))
}

/// The first whitespace-separated field (a double-quoted field may hold spaces), and the rest.
fn field(text: &str) -> Result<(&str, &str), String> {
    let text = text.trim_start();
    if let Some(quoted) = text.strip_prefix('"') {
        let end = quoted.find('"').ok_or("unterminated quote")?;
        return Ok((&quoted[..end], &quoted[end + 1..]));
    }
    let mut in_quotes = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => return Ok((&text[..i], &text[i..])),
            _ => {}
        }
    }
    Err("a line needs principals and a key".to_owned())
}

/// Options are comma-separated; a quoted value may hold commas.
fn split_options(options: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    for c in options.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                current.push(c);
            }
            ',' if !in_quotes => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `YYYYMMDD[HHMM[SS]][Z]` as seconds since the Unix epoch, read as UTC (ssh-keygen reads a time without `Z` as
/// local time; a server's local time is UTC in practice, and the README says so).
fn parse_time(text: &str) -> Result<i64, String> {
    let digits = text.trim_end_matches(['Z', 'z']);
    let bad = || format!("time {text:?} is not YYYYMMDD[HHMM[SS]][Z]");
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let part = |range: std::ops::Range<usize>| digits.get(range).unwrap_or("00");
    let rfc3339 =
        format!("{}-{}-{}T{}:{}:{}Z", part(0..4), part(4..6), part(6..8), part(8..10), part(10..12), part(12..14));
    let time = humantime::parse_rfc3339(&rfc3339).map_err(|_| bad())?;
    let seconds = time.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad())?.as_secs();
    i64::try_from(seconds).map_err(|_| bad())
}

#[cfg(test)]
mod tests;
