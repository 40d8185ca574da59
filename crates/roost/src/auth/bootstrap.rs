//! Accounts Roost makes itself: the first `admin` (when a server starts with authentication on
//! and no users) and the `demo` device user of `serve --demo`.

use super::password;
use crate::store::{DatabaseUrl, Store, UserError};
use anyhow::Context;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use tracing::info;

pub const ADMIN: &str = "admin";
/// The end of the name of the file the first admin's password is written to (see
/// [`admin_password_path`]).
const ADMIN_PASSWORD_SUFFIX: &str = "admin-password";

/// A user name must be one topic level (it is the owner level of `iot/{name}/#`).
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("user name {name:?} must be 1 to 64 characters"));
    }
    if name.starts_with('$') || name.chars().any(|c| matches!(c, '/' | '+' | '#') || c.is_whitespace() || c.is_control()) {
        return Err(format!("user name {name:?} must be one topic level: no '/', '+', '#', spaces or leading '$'"));
    }
    Ok(())
}

/// Where the first admin's password goes for `database`, one file per database so that two
/// databases never share (and overwrite) one: beside a SQLite file, named after it
/// (`roost.db` → `roost-admin-password`); in `data_dir` for a server database, named after
/// its kind and name (`postgres://…/roost` → `postgres-roost-admin-password`).
pub fn admin_password_path(database: &DatabaseUrl, data_dir: &Path) -> PathBuf {
    if let Some(file) = database.sqlite_file() {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("roost");
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        return dir.join(format!("{stem}-{ADMIN_PASSWORD_SUFFIX}"));
    }
    let kind = match database.dialect() {
        Some(crate::store::Dialect::MySql) => "mysql",
        _ => "postgres",
    };
    let name = database.database_name().unwrap_or("roost");
    data_dir.join(format!("{kind}-{name}-{ADMIN_PASSWORD_SUFFIX}"))
}

/// With no users at all, creates `admin` with a random password, writes it to a file only the
/// owner can read and says where. The password itself is shown only on a terminal: logs are
/// no place for secrets.
pub async fn ensure_admin(store: &Store, data_dir: &Path) -> anyhow::Result<()> {
    if store.count_users().await? > 0 {
        return Ok(());
    }
    let secret = password::generate();
    let hash = password::hash(secret.clone()).await?;
    match store.create_user(ADMIN, &hash, true).await {
        // Another instance on the same database was first.
        Err(UserError::Exists(_)) => return Ok(()),
        other => other?,
    }
    let path = admin_password_path(store.url(), data_dir);
    write_secret(&path, &secret).with_context(|| format!("writing the admin password to {}", path.display()))?;
    info!(user = ADMIN, file = %path.display(), "no users yet: created an admin; its password is in the file (mode 0600)");
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let _ = writeln!(
            err,
            "\n  Created user `admin` with password {secret}\n  (also in {}; change it with `roost user passwd admin`)\n",
            path.display()
        );
    }
    Ok(())
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // `mode` applies only to a new file; an old one gets the same permissions here.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    writeln!(file, "{secret}")
}

/// The `demo` device user with a fresh random password, for `serve --demo`'s own boards.
pub async fn demo_user(store: &Store, name: &str) -> anyhow::Result<String> {
    let secret = password::generate();
    let hash = password::hash(secret.clone()).await?;
    match store.create_user(name, &hash, false).await {
        Err(UserError::Exists(_)) => store.set_password(name, &hash).await?,
        other => other?,
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_single_topic_levels() {
        assert!(check_user_name("yanjo").is_ok());
        assert!(check_user_name("kitchen-board_2").is_ok());
        for bad in ["", "a/b", "a+", "#", "$SYS", "two words", &"x".repeat(65)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_admin_password_lands_beside_the_sqlite_file_or_in_the_data_directory() {
        let data = Path::new("/srv/roost");
        assert_eq!(
            admin_password_path(&DatabaseUrl::new("sqlite:///var/lib/roost/roost.db"), data),
            Path::new("/var/lib/roost/roost-admin-password")
        );
        assert_eq!(admin_password_path(&DatabaseUrl::new("sqlite://roost.db"), data), Path::new("roost-admin-password"));
        assert_eq!(admin_password_path(&DatabaseUrl::new("sqlite://test.db?mode=rwc"), data), Path::new("test-admin-password"));
        // A server database's file never takes the SQLite one's name in the same directory.
        assert_eq!(
            admin_password_path(&DatabaseUrl::new("postgres://u@h/roost"), data),
            Path::new("/srv/roost/postgres-roost-admin-password")
        );
        assert_eq!(
            admin_password_path(&DatabaseUrl::new("mariadb://u:pw@h:3306/roost?ssl-mode=disabled"), data),
            Path::new("/srv/roost/mysql-roost-admin-password")
        );
    }
}
