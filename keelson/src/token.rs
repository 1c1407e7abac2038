//! The API token: `KEELSON_API_TOKEN`, else the one stored in the data
//! directory, else a new one written there with owner-only permissions.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// File name of the stored token.
pub const TOKEN_FILE: &str = "api-token";

/// Where the token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The environment.
    Env,
    /// The data directory.
    Stored(PathBuf),
    /// Generated now (and stored there, unless in memory).
    Generated(Option<PathBuf>),
}

/// A new random token.
pub fn generate() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Resolves the token for a node with this data directory (`None` = memory).
pub fn resolve(env: Option<String>, dir: Option<&Path>) -> anyhow::Result<(String, Origin)> {
    if let Some(t) = env.filter(|t| !t.trim().is_empty()) {
        return Ok((t.trim().to_string(), Origin::Env));
    }
    let Some(dir) = dir else {
        return Ok((generate(), Origin::Generated(None)));
    };
    let path = dir.join(TOKEN_FILE);
    if path.exists() {
        let t = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok((t, Origin::Stored(path)));
        }
    }
    create_private_dir(dir)?;
    let t = generate();
    write_private(&path, &t)?;
    Ok((t, Origin::Generated(Some(path))))
}

/// Creates a directory readable by its owner only (the data directory holds
/// every event and the token); an existing directory keeps its permissions.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(content.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_generated_once_stored_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (t1, o1) = resolve(None, Some(&data)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&data).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "a new data directory is owner-only");
        }
        assert!(matches!(o1, Origin::Generated(Some(_))));
        let (t2, o2) = resolve(None, Some(&data)).unwrap();
        assert_eq!(t1, t2);
        assert!(matches!(o2, Origin::Stored(_)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (t3, o3) = resolve(Some("from-env".into()), Some(&data)).unwrap();
        assert_eq!((t3.as_str(), o3), ("from-env", Origin::Env));
    }
}
