//! `roost user …` and `roost token …`: accounts and API tokens from the command line, on the
//! database `serve` uses.

use super::bootstrap::check_user_name;
use super::password;
use crate::cli::{TokenCommand, UserCommand};
use crate::model::TimestampMs;
use crate::store::{Grant, Store, TokenKind};
use anyhow::Context;
use std::io::{Read, Write};

/// `println!` that fails the command instead of panicking when standard output is closed
/// (`roost user list | head -0`): `error: writing to standard output: Broken pipe`.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).context("writing to standard output")?
    };
}

/// Shortest password a person may choose (generated ones are longer).
pub const MIN_PASSWORD: usize = 8;

/// A password a person chose, checked the same way from the CLI and the API.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!("the password must be at least {MIN_PASSWORD} characters"));
    }
    Ok(())
}

/// A grant of `filter`, which must be a valid MQTT topic filter; at least one of `publish`
/// and `subscribe`.
pub fn new_grant(filter: &str, publish: bool, subscribe: bool) -> Result<Grant, String> {
    mqtt_codec::TopicFilter::parse(filter).map_err(|e| format!("{filter:?} is not a topic filter: {e}"))?;
    // MariaDB/MySQL keep a grant's filter in a key column of 191 characters; every database
    // takes the same grants.
    let longest = crate::model::MAX_LEVEL_CHARS;
    if filter.chars().count() > longest {
        return Err(format!("a grant's topic filter may be at most {longest} characters"));
    }
    if !publish && !subscribe {
        return Err("a grant allows publish, subscribe or both".into());
    }
    Ok(Grant { filter: filter.to_owned(), publish, subscribe })
}

pub async fn run(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { name, admin, password_stdin, db } => {
            check_user_name(&name).map_err(anyhow::Error::msg)?;
            let (secret, generated) = new_password(password_stdin)?;
            let store = Store::open_existing(&db.database).await?;
            store.create_user(&name, &password::hash(secret.clone()).await?, admin).await?;
            let role = if admin { "admin: every topic".to_owned() } else { format!("device: iot/{name}/#") };
            say!("created user {name} ({role})");
            if generated {
                say!("password (shown once): {secret}");
            }
            store.close().await;
        }
        UserCommand::List { db } => {
            let store = Store::open_existing(&db.database).await?;
            let users = store.users().await?;
            store.close().await;
            say!("{:<24} {:<7} {:<20} grants", "name", "role", "created (UTC)");
            for user in users {
                let created = minute(user.created_at);
                let grants: Vec<String> = user.grants.iter().map(describe).collect();
                let role = if user.is_admin { "admin" } else { "device" };
                say!("{:<24} {:<7} {:<20} {}", user.name, role, created, grants.join(", "));
            }
        }
        UserCommand::Remove { name, db } => {
            let store = Store::open_existing(&db.database).await?;
            let users = store.users().await?;
            if users.iter().any(|u| u.name == name && u.is_admin) && !users.iter().any(|u| u.name != name && u.is_admin) {
                store.close().await;
                anyhow::bail!("{name} is the last admin: make another one first (`roost user add NAME --admin`)");
            }
            store.delete_user(&name).await?;
            store.close().await;
            say!("removed user {name}; connections already open stay until they reconnect");
            if let Some(removed) = remove_first_admin_password(&name, &db) {
                say!("removed {}: it held the password of the removed user", removed.display());
            }
        }
        UserCommand::Passwd { name, password_stdin, db } => {
            let (secret, generated) = new_password(password_stdin)?;
            let store = Store::open_existing(&db.database).await?;
            store.set_password(&name, &password::hash(secret.clone()).await?).await?;
            store.close().await;
            say!("changed the password of {name}");
            if let Some(removed) = remove_first_admin_password(&name, &db) {
                say!("removed {}: it held the old password", removed.display());
            }
            if generated {
                say!("password (shown once): {secret}");
            }
        }
        UserCommand::Grant { name, filter, publish_only, subscribe_only, db } => {
            let grant = new_grant(&filter, !subscribe_only, !publish_only).map_err(anyhow::Error::msg)?;
            let store = Store::open_existing(&db.database).await?;
            store.grant(&name, &grant).await?;
            store.close().await;
            say!("{name} may now {} (from their next connection)", describe(&grant));
        }
        UserCommand::Revoke { name, filter, db } => {
            let store = Store::open_existing(&db.database).await?;
            let removed = store.revoke(&name, &filter).await?;
            store.close().await;
            anyhow::ensure!(removed, "{name} has no grant for {filter:?}");
            say!("revoked {filter} from {name} (from their next connection)");
        }
    }
    Ok(())
}

/// When `name` is the first admin's, removes the file its first start wrote the password to
/// (it no longer holds a password that works); the path, if there was one.
fn remove_first_admin_password(name: &str, db: &crate::cli::DatabaseArgs) -> Option<std::path::PathBuf> {
    let file = super::bootstrap::admin_password_path(&db.database, &db.dir.data_dir);
    (name == super::bootstrap::ADMIN && std::fs::remove_file(&file).is_ok()).then_some(file)
}

pub async fn run_token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { user, name, expires_in, db } => {
            let store = Store::open_existing(&db.database).await?;
            let (token, hash) = super::tokens::generate();
            let expires = expires_in.map(super::tokens::expires_after);
            let id = store.create_token(&user, TokenKind::Api, &name, &hash, expires).await?;
            store.close().await;
            say!("created token {id} for {user} ({name}); it is shown once:");
            say!("{token}");
        }
        TokenCommand::List { db } => {
            let store = Store::open_existing(&db.database).await?;
            let tokens = store.api_tokens(None).await?;
            store.close().await;
            say!("{:<6} {:<24} {:<24} {:<17} expires (UTC)", "id", "user", "name", "created (UTC)");
            for t in tokens {
                let expires = t.expires_at.map_or_else(|| "never".to_owned(), minute);
                say!("{:<6} {:<24} {:<24} {:<17} {}", t.id, t.user, t.name, minute(t.created_at), expires);
            }
        }
        TokenCommand::Revoke { id, db } => {
            let store = Store::open_existing(&db.database).await?;
            let revoked = store.revoke_api_token(id, None).await?;
            store.close().await;
            anyhow::ensure!(revoked, "there is no API token {id}");
            say!("revoked token {id}");
        }
    }
    Ok(())
}

/// `2026-11-25 22:37` (UTC).
fn minute(at: TimestampMs) -> String {
    time::OffsetDateTime::from_unix_timestamp(at.0 / 1000)
        .map(|t| format!("{:04}-{:02}-{:02} {:02}:{:02}", t.year(), t.month() as u8, t.day(), t.hour(), t.minute()))
        .unwrap_or_default()
}

/// What a grant allows, in words: `publish and subscribe home/+/cmd`.
pub fn describe(grant: &Grant) -> String {
    match (grant.publish, grant.subscribe) {
        (true, true) => format!("publish and subscribe {}", grant.filter),
        (true, false) => format!("publish {}", grant.filter),
        _ => format!("subscribe {}", grant.filter),
    }
}

/// The password from standard input's first line, or a generated one. `true`: generated.
fn new_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((password::generate(), true));
    }
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("reading the password from standard input")?;
    let line = input.lines().next().unwrap_or_default().to_owned();
    check_password(&line).map_err(anyhow::Error::msg)?;
    Ok((line, false))
}
