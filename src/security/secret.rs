//! Secrets on disk: the cluster secret and the tokens, read from files that
//! only their owner may read, and kept in memory only as keys and digests.
//!
//! A secret file holds one secret per line (blank lines and lines starting
//! with `#` are skipped). The cluster secret file may hold several: the first
//! is the one this node dials with, and every one is accepted from a peer, so
//! a ring can move to a new secret node by node without a moment where two
//! members cannot talk (README, "Rotating the cluster secret"). A token file
//! holds one token.
//!
//! Nothing here implements `Display`, and `Debug` prints only a short
//! fingerprint: a secret cannot end up in a log by accident.

use std::fmt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// The fewest characters a cluster secret may have: a secret a person could
/// guess is no secret. `make run-db` writes 64 hex digits (256 bits).
pub const MIN_SECRET_CHARS: usize = 32;
/// The longest token accepted anywhere (a file, a header, a handshake).
pub const MAX_TOKEN_BYTES: usize = 256;

/// A 32-byte key derived from one line of the cluster secret file: the
/// pre-shared key of the Noise handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey {
    psk: [u8; 32],
    id: [u8; 8],
}

impl ClusterKey {
    /// The key for one secret (the text of one line of the file).
    pub fn derive(secret: &[u8]) -> ClusterKey {
        let psk: [u8; 32] = Sha256::new()
            .chain_update(b"dynamo cluster secret v1\0")
            .chain_update(secret)
            .finalize()
            .into();
        let full: [u8; 32] = Sha256::new()
            .chain_update(b"dynamo cluster key id v1\0")
            .chain_update(psk)
            .finalize()
            .into();
        let mut id = [0; 8];
        id.copy_from_slice(&full[..8]);
        ClusterKey { psk, id }
    }

    /// The pre-shared key.
    pub fn psk(&self) -> &[u8; 32] {
        &self.psk
    }

    /// A public name for the key, sent in the clear so that a node holding
    /// several secrets knows which one a peer dials with. It tells nothing
    /// about the secret (a hash of a hash of it).
    pub fn id(&self) -> [u8; 8] {
        self.id
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(id {})", hex(&self.id))
    }
}

/// The SHA-256 of a token: what a node keeps and compares. A token is 256
/// random bits, so its digest cannot be turned back into it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    /// Lower-case hex, as stored in the ring.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses [`TokenDigest::to_hex`].
    pub fn from_hex(s: &str) -> Option<TokenDigest> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let text = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(text, 16).ok()?;
        }
        Some(TokenDigest(out))
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({}..)", &self.to_hex()[..8])
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A new token: `dyn_` and 64 hex digits, 256 bits from the operating
/// system's generator (through two v4 UUIDs' worth of `getrandom`).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    // A v4 UUID fixes 6 of its 128 bits; hashing the two spreads the 244
    // random ones over the whole token.
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    format!("dyn_{}", hex(&digest))
}

/// Checks the form of a token (from a file, a header or a handshake):
/// printable ASCII without spaces, at most [`MAX_TOKEN_BYTES`].
pub fn check_token(token: &str) -> Result<()> {
    if token.is_empty() {
        return Err(Error::invalid("the token is empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Error::invalid(format!(
            "the token is {} bytes; the limit is {MAX_TOKEN_BYTES}",
            token.len()
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "the token holds a space or a character that is not printable ASCII",
        ));
    }
    Ok(())
}

/// The secrets of a file, in order. Refuses a file that group or others may
/// read (`what` names the flag in the message), as ssh refuses a private key.
pub fn read_secret_lines(path: &Path, what: &str) -> Result<Vec<String>> {
    let bad = |reason: String| Error::Config {
        reason: format!("{what} {}: {reason}", path.display()),
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "permissions {mode:03o} let others read it; make it readable by its owner \
                 only (chmod 600)"
            )));
        }
    }
    let raw = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8(raw).map_err(|_| bad("not UTF-8 text".into()))?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        return Err(bad("holds no secret".into()));
    }
    Ok(lines)
}

/// The keys of a cluster secret file (`--cluster-secret-file`).
pub fn read_cluster_keys(path: &Path) -> Result<Vec<ClusterKey>> {
    let lines = read_secret_lines(path, "--cluster-secret-file")?;
    for (i, line) in lines.iter().enumerate() {
        if line.chars().count() < MIN_SECRET_CHARS {
            return Err(Error::Config {
                reason: format!(
                    "--cluster-secret-file {}: secret {} has {} characters; at least \
                     {MIN_SECRET_CHARS} are needed (make run-db writes 64 random hex digits)",
                    path.display(),
                    i + 1,
                    line.chars().count()
                ),
            });
        }
    }
    Ok(lines
        .iter()
        .map(|l| ClusterKey::derive(l.as_bytes()))
        .collect())
}

/// The token of a token file: its first secret line. `check_mode`: refuse a
/// file others may read (a node's `--admin-token-file`); a client only warns.
pub fn read_token_file(path: &Path, what: &str, check_mode: bool) -> Result<String> {
    let lines = if check_mode {
        read_secret_lines(path, what)?
    } else {
        let raw = std::fs::read_to_string(path).map_err(|e| Error::Config {
            reason: format!("{what} {}: {e}", path.display()),
        })?;
        raw.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let token = lines.into_iter().next().ok_or_else(|| Error::Config {
        reason: format!("{what} {}: holds no token", path.display()),
    })?;
    check_token(&token).map_err(|e| Error::Config {
        reason: format!("{what} {}: {e}", path.display()),
    })?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn file(text: &str, mode: u32) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn a_secret_file_others_may_read_is_refused() {
        let secret = "0123456789abcdef0123456789abcdef";
        let f = file(secret, 0o644);
        let e = read_cluster_keys(f.path()).unwrap_err().to_string();
        assert!(
            e.contains("permissions 644") && e.contains("chmod 600"),
            "{e}"
        );
        assert!(!e.contains(secret), "the message shows the secret: {e}");
        let f = file(secret, 0o600);
        assert_eq!(read_cluster_keys(f.path()).unwrap().len(), 1);
        let f = file(secret, 0o640);
        assert!(read_cluster_keys(f.path()).is_err());
    }

    #[test]
    fn every_line_is_a_key_and_the_first_dials() {
        let f = file(
            "# new first\nBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\n\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
            0o600,
        );
        let keys = read_cluster_keys(f.path()).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            keys[0],
            ClusterKey::derive(b"BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB")
        );
        assert_ne!(keys[0].id(), keys[1].id());
        assert_ne!(keys[0].psk(), keys[1].psk());
    }

    #[test]
    fn short_and_empty_secrets_are_refused() {
        let f = file("short\n", 0o600);
        let e = read_cluster_keys(f.path()).unwrap_err().to_string();
        assert!(e.contains("at least 32"), "{e}");
        assert!(!e.contains("short"), "{e}");
        let f = file("# only a comment\n\n", 0o600);
        assert!(read_cluster_keys(f.path())
            .unwrap_err()
            .to_string()
            .contains("no secret"));
    }

    #[test]
    fn debug_shows_no_secret() {
        let k = ClusterKey::derive(b"a secret nobody may see in a log, ever");
        let shown = format!("{k:?}");
        assert!(!shown.contains(&hex(k.psk())), "{shown}");
        let d = TokenDigest::of("dyn_abc");
        assert!(format!("{d:?}").len() < 30);
    }

    #[test]
    fn tokens_are_random_well_formed_and_digests_round_trip() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with("dyn_") && a.len() == 68, "{a}");
        check_token(&a).unwrap();
        let d = TokenDigest::of(&a);
        assert_eq!(TokenDigest::from_hex(&d.to_hex()), Some(d));
        assert!(TokenDigest::from_hex("zz").is_none());
        assert!(check_token("has space").is_err());
        assert!(check_token(&"x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
    }

    #[test]
    fn a_token_file_gives_its_first_line() {
        let f = file("\n# admin\ndyn_0123\nignored\n", 0o600);
        assert_eq!(
            read_token_file(f.path(), "--token-file", true).unwrap(),
            "dyn_0123"
        );
        let f = file("dyn_0123\n", 0o644);
        assert!(read_token_file(f.path(), "--admin-token-file", true).is_err());
        assert_eq!(
            read_token_file(f.path(), "--token-file", false).unwrap(),
            "dyn_0123"
        );
    }
}
