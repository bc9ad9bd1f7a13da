//! The JWT secret: from configuration, or generated once and kept in the data
//! directory (mode 0600) so tokens survive restarts.

use std::io::Write;
use std::path::Path;

use crate::auth::JwtSecret;

/// The file in the data directory that holds a generated secret.
const SECRET_FILE: &str = "jwt-secret";

/// Uses `configured` when set; otherwise reads the secret kept in `data_dir`,
/// generating and saving one on first start.
pub fn jwt_secret(data_dir: &Path, configured: Option<&str>) -> anyhow::Result<JwtSecret> {
    if let Some(text) = configured.filter(|t| !t.trim().is_empty()) {
        return JwtSecret::new(text).map_err(|e| anyhow::anyhow!("CUSTARD_JWT_SECRET: {e}"));
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

    #[test]
    fn generated_once_kept_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = jwt_secret(dir.path(), None).expect("generated");
        let second = jwt_secret(dir.path(), None).expect("read back");
        assert_eq!(first.expose(), second.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                std::fs::metadata(dir.path().join(SECRET_FILE)).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let configured = jwt_secret(dir.path(), Some("a configured secret that is long enough!"))
            .expect("configured");
        assert_ne!(configured.expose(), first.expose());
        assert!(jwt_secret(dir.path(), Some("short")).is_err());
    }
}
