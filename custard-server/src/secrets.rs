//! The JWT secret: from configuration; or generated once and kept where
//! every server that checks the tokens finds it: in the data directory (mode
//! 0600) beside a SQLite store, in the store itself when it is shared by
//! replicas (PostgreSQL), so tokens survive restarts and work on any replica.

use std::io::Write;
use std::path::Path;

use crate::auth::JwtSecret;
use crate::store::Store;

/// The file in the data directory that holds a generated secret.
const SECRET_FILE: &str = "jwt-secret";

/// The name of the generated secret in a shared store.
const SHARED_NAME: &str = "jwt";

/// Uses `configured` when set; otherwise the secret kept in `shared` (a store
/// several replicas use; the first replica's generated secret wins) or in
/// `data_dir`, generating one on first start.
pub async fn jwt_secret(
    data_dir: &Path,
    configured: Option<&str>,
    shared: Option<&dyn Store>,
) -> anyhow::Result<JwtSecret> {
    if let Some(text) = configured.filter(|t| !t.trim().is_empty()) {
        return JwtSecret::new(text).map_err(|e| anyhow::anyhow!("CUSTARD_JWT_SECRET: {e}"));
    }
    if let Some(store) = shared {
        let candidate = String::from_utf8(JwtSecret::generate().expose().to_vec())?;
        let kept = store.shared_secret(SHARED_NAME, candidate).await?;
        return JwtSecret::new(&kept).map_err(|e| anyhow::anyhow!("the store's JWT secret: {e}"));
    }
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            JwtSecret::new(text.trim()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let secret = JwtSecret::generate();
            write_private(&path, secret.expose())?;
            tracing::info!(path = %path.display(), "generated a JWT secret");
            Ok(secret)
        }
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// Writes `bytes` to a new file only its owner can read, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generated_once_kept_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = jwt_secret(dir.path(), None, None).await.expect("generated");
        let second = jwt_secret(dir.path(), None, None).await.expect("read back");
        assert_eq!(first.expose(), second.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                std::fs::metadata(dir.path().join(SECRET_FILE)).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let configured =
            jwt_secret(dir.path(), Some("a configured secret that is long enough!"), None)
                .await
                .expect("configured");
        assert_ne!(configured.expose(), first.expose());
        assert!(jwt_secret(dir.path(), Some("short"), None).await.is_err());
    }

    /// Two servers on one shared store, each with its own data dir, sign and
    /// check with the same generated secret; none is written to a data dir.
    #[tokio::test]
    async fn a_shared_store_keeps_one_secret_for_every_server() {
        let store_dir = tempfile::tempdir().expect("tempdir");
        let store =
            crate::store::SqliteStore::open(&store_dir.path().join("custard.db")).expect("store");
        let (a, b) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
        let first = jwt_secret(a.path(), None, Some(&store)).await.expect("first");
        let second = jwt_secret(b.path(), None, Some(&store)).await.expect("second");
        assert_eq!(first.expose(), second.expose());
        assert!(!a.path().join(SECRET_FILE).exists() && !b.path().join(SECRET_FILE).exists());
        // A configured secret still comes first.
        let configured =
            jwt_secret(a.path(), Some("a configured secret that is long enough!"), Some(&store))
                .await
                .expect("configured");
        assert_ne!(configured.expose(), first.expose());
    }
}
