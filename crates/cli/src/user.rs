//! `turbo-coder user`: the gateway's users and API keys, in the configured store (the one the
//! gateway uses: `store.url`).
//!
//! - `user add NAME [--role R]...`: registers a user and prints a token for them (signed with
//!   `gateway.jwt_secret`, like `turbo-coder token`), for local use.
//! - `user key NAME [--label L]`: prints a new API key for the user, once; only its hash is kept.
//! - `user list`: the users, their roles, their keys.
//! - `user disable NAME`, `user revoke-key ID`: their tokens or that key stop working at once.

use std::time::Duration;

use clap::Subcommand;
use turbo_config::Config;
use turbo_gateway::auth::{Role, api_key_hash, api_key_shown, new_api_key};

use crate::exit::{self, Exit};

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Register a user and print a token for them.
    Add {
        name: String,
        /// viewer (reads), developer (also creates and runs), admin (everything); repeatable.
        #[arg(long = "role", default_value = "developer")]
        roles: Vec<String>,
        /// How long the printed token is valid.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
    },
    /// Print a new API key for a user (shown once; only its hash is stored).
    Key {
        name: String,
        /// What the key is for, shown in `user list`.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List users, their roles and their API keys.
    List,
    /// Disable a user: their tokens and keys stop working.
    Disable { name: String },
    /// Revoke one API key by its id (from `user list`).
    RevokeKey { id: String },
}

fn store_error(e: turbo_store::Error) -> Exit {
    use turbo_store::Error as S;
    let code = match &e {
        S::Taken { .. } | S::Invalid { .. } | S::NotFound { .. } | S::WrongState { .. } => exit::USAGE,
        _ => exit::STORAGE,
    };
    Exit::new(code, e.to_string())
}

pub async fn user(config: &Config, command: UserCommand) -> Result<u8, Exit> {
    let store = crate::open_store(config).await?;
    let now = chrono::Utc::now();
    match command {
        UserCommand::Add { name, roles, ttl_hours } => {
            let mut parsed = Vec::new();
            for text in &roles {
                parsed.push(Role::parse(text).ok_or_else(|| {
                    Exit::new(exit::USAGE, format!("--role '{text}' is not a role: use viewer, developer or admin"))
                })?);
            }
            if ttl_hours == 0 || ttl_hours > 24 * 366 {
                return Err(Exit::new(exit::USAGE, "--ttl-hours must be between 1 and 8784 (a year)"));
            }
            let user = store.create_user(&name, &roles, now).await.map_err(store_error)?;
            eprintln!("registered user '{}' with roles {}", user.name, user.roles.join(", "));
            match turbo_gateway::check(config) {
                Ok(tokens) => {
                    let token = tokens
                        .issue(&user.name, &parsed, Duration::from_secs(ttl_hours * 3600))
                        .map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
                    println!("{token}");
                }
                Err(e) => {
                    eprintln!("no token printed ({e}); make an API key with `turbo-coder user key {}`", user.name)
                }
            }
        }
        UserCommand::Key { name, label } => {
            let key = new_api_key();
            let stored = store
                .add_api_key(&name, label.trim(), &api_key_shown(&key), &api_key_hash(&key), now)
                .await
                .map_err(store_error)?;
            eprintln!("API key {} for '{}' (shown once: keep it now)", stored.id, stored.user);
            println!("{key}");
        }
        UserCommand::List => {
            for u in store.list_users().await.map_err(store_error)? {
                let state =
                    u.disabled_at.map_or("active".to_string(), |t| format!("disabled {}", t.format("%Y-%m-%d %H:%M")));
                println!("{}\t{}\t{}", u.name, u.roles.join(","), state);
                for k in store.list_api_keys(&u.name).await.map_err(store_error)? {
                    let state = match (k.revoked_at, k.last_used_at) {
                        (Some(t), _) => format!("revoked {}", t.format("%Y-%m-%d %H:%M")),
                        (None, Some(t)) => format!("last used {}", t.format("%Y-%m-%d %H:%M")),
                        (None, None) => "never used".to_string(),
                    };
                    println!("  key {}\t{}…\t{}\t{}", k.id, k.prefix, k.label, state);
                }
            }
        }
        UserCommand::Disable { name } => {
            let user = store.disable_user(&name, now).await.map_err(store_error)?;
            println!("user '{}' is disabled", user.name);
        }
        UserCommand::RevokeKey { id } => {
            let id = uuid::Uuid::parse_str(id.trim())
                .map_err(|_| Exit::new(exit::USAGE, format!("'{id}' is not a key id (see `turbo-coder user list`)")))?;
            let key = store.revoke_api_key(id, now).await.map_err(store_error)?;
            println!("API key {} of '{}' is revoked", key.id, key.user);
        }
    }
    Ok(exit::OK)
}
