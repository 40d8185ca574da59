//! Database URLs: which database a URL names, and printing one without its password.

use std::fmt;
use std::str::FromStr;

/// A database URL; prints without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included: only for handing to a driver or a child process.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    pub fn dialect(&self) -> Option<Dialect> {
        let scheme = self.0.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::MySql),
            _ => None,
        }
    }

    /// The file of a `sqlite://` URL (without query options); `None` for server databases.
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        let rest = self.0.strip_prefix("sqlite://").or_else(|| self.0.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or_default();
        // Percent-decoded, as sqlx opens it (`%3F` for a `?` in the name).
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(decoded.as_ref()))
    }

    /// This URL with a SQLite file's relative path made absolute (against the working
    /// directory, as SQLite opens it): for telling commands that run elsewhere. Other URLs as
    /// they are.
    pub fn with_absolute_file(&self) -> DatabaseUrl {
        let Some(file) = self.sqlite_file().filter(|file| file.is_relative()) else { return self.clone() };
        let Ok(absolute) = std::path::absolute(&file) else { return self.clone() };
        let options = self.0.split_once('?').map(|(_, options)| format!("?{options}")).unwrap_or_default();
        // The characters sqlx would read as the URL's and not the path's, encoded.
        const SPECIAL: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%').add(b'?').add(b'#');
        let path = percent_encoding::utf8_percent_encode(&absolute.to_string_lossy(), SPECIAL).to_string();
        DatabaseUrl(format!("sqlite://{path}{options}"))
    }

    /// The database name of a server URL (`postgres://user@host/NAME?…`).
    pub fn database_name(&self) -> Option<&str> {
        let rest = self.0.split_once("://")?.1;
        let path = rest.split('?').next()?;
        let name = path.split_once('/')?.1;
        (!name.is_empty() && !name.contains('/')).then_some(name)
    }

    /// The URL the driver understands (`mariadb://` is MySQL's protocol).
    pub(super) fn for_driver(&self) -> String {
        match self.0.strip_prefix("mariadb:") {
            Some(rest) => format!("mysql:{rest}"),
            None => self.0.clone(),
        }
    }

    fn redacted(&self) -> String {
        // scheme://user:password@host → scheme://user:***@host
        let Some((scheme, rest)) = self.0.split_once("://") else { return self.0.clone() };
        let Some((credentials, host)) = rest.rsplit_once('@') else { return self.0.clone() };
        match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => self.0.clone(),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let url = Self::new(s);
        url.dialect().map(|_| url).ok_or_else(|| {
            // A plain path is what one tries first for a SQLite file.
            let hint = if s.contains(':') { String::new() } else { format!(" (a SQLite file: sqlite://{s})") };
            format!("{s:?} is not a sqlite://, postgres:// or mysql:// (mariadb://) URL{hint}")
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    /// How many ingest batches may be written at once. Two on PostgreSQL: one commits while the
    /// next is sent (a fleet of one-in-flight boards: 37k → 42k readings/s). One on SQLite,
    /// which has one writer at a time anyway, and on MariaDB/MySQL, where two batches on the
    /// same few sensors wait on each other's row and gap locks (8 busy sensors: 162k → 64k
    /// readings/s, p99 10 → 103 ms).
    pub fn concurrent_writes(self) -> usize {
        match self {
            Dialect::Postgres => 2,
            Dialect::Sqlite | Dialect::MySql => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_passwords() {
        let url = DatabaseUrl::new("postgres://roost:s3cret@db.lan:5432/roost");
        assert_eq!(url.to_string(), "postgres://roost:***@db.lan:5432/roost");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(DatabaseUrl::new("sqlite://roost.db").to_string(), "sqlite://roost.db");
    }

    #[test]
    fn a_relative_sqlite_file_is_made_absolute_for_other_processes() {
        let here = std::env::current_dir().unwrap();
        let url = DatabaseUrl::new("sqlite://data/roost.db?mode=rwc").with_absolute_file();
        assert_eq!(url.expose_secret(), format!("sqlite://{}?mode=rwc", here.join("data/roost.db").display()));
        assert_eq!(url.sqlite_file(), Some(here.join("data/roost.db")));
        // A name with characters of URLs: decoded as sqlx decodes it, encoded again.
        let odd = DatabaseUrl::new("sqlite://50%25%20done%3F/roost.db");
        assert_eq!(odd.sqlite_file(), Some(std::path::PathBuf::from("50% done?/roost.db")));
        let absolute = odd.with_absolute_file();
        assert_eq!(absolute.expose_secret(), format!("sqlite://{}/50%25 done%3F/roost.db", here.display()));
        assert_eq!(absolute.sqlite_file(), Some(here.join("50% done?/roost.db")));
        for unchanged in ["sqlite:///var/lib/roost/roost.db", "sqlite::memory:", "postgres://u@h/db"] {
            assert_eq!(DatabaseUrl::new(unchanged).with_absolute_file().expose_secret(), unchanged);
        }
    }

    #[test]
    fn a_plain_path_is_refused_with_its_sqlite_url() {
        let e = "data/roost2.db".parse::<DatabaseUrl>().unwrap_err();
        assert!(e.ends_with("(a SQLite file: sqlite://data/roost2.db)"), "{e}");
        assert!(!"http://db".parse::<DatabaseUrl>().unwrap_err().contains("SQLite file"));
    }

    #[test]
    fn schemes_select_the_dialect() {
        assert_eq!("mariadb://root@127.0.0.1/test".parse::<DatabaseUrl>().unwrap().dialect(), Some(Dialect::MySql));
        assert_eq!(DatabaseUrl::new("mariadb://x@h/db").for_driver(), "mysql://x@h/db");
        assert!("redis://localhost".parse::<DatabaseUrl>().unwrap_err().contains("is not a sqlite://"));
    }
}
