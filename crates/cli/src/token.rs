//! `turbo-coder token --user NAME [--role R]... [--ttl-hours H]`: prints a bearer token for the
//! gateway, signed with the configured `gateway.jwt_secret` (the same configuration as the
//! gateway's), for local use and scripts: `curl -H "Authorization: Bearer $(turbo-coder token
//! --user ana)" ...`.

use std::time::Duration;

use clap::Args;
use turbo_config::Config;
use turbo_gateway::auth::{Role, Tokens};

use crate::exit::{self, Exit};

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Who the token is for (its `sub`); projects they create are theirs.
    #[arg(long)]
    pub user: String,
    /// viewer (reads), developer (also creates and runs), admin (everything); repeatable.
    #[arg(long = "role", default_value = "developer")]
    pub roles: Vec<String>,
    /// How long the token is valid.
    #[arg(long, default_value_t = 24)]
    pub ttl_hours: u64,
}

pub fn token(config: &Config, args: TokenArgs) -> Result<u8, Exit> {
    let user = args.user.trim();
    if user.is_empty() || user.len() > 200 || user.chars().any(char::is_control) {
        return Err(Exit::new(exit::USAGE, "--user must be a name of 1 to 200 printable characters"));
    }
    let mut roles = Vec::new();
    for text in &args.roles {
        let role = Role::parse(text).ok_or_else(|| {
            Exit::new(exit::USAGE, format!("--role '{text}' is not a role: use viewer, developer or admin"))
        })?;
        roles.push(role);
    }
    if args.ttl_hours == 0 || args.ttl_hours > 24 * 366 {
        return Err(Exit::new(exit::USAGE, "--ttl-hours must be between 1 and 8784 (a year)"));
    }
    let tokens = turbo_gateway::check(config).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    let issued = issue(&tokens, user, &roles, Duration::from_secs(args.ttl_hours * 3600))?;
    println!("{issued}");
    Ok(exit::OK)
}

fn issue(tokens: &Tokens, user: &str, roles: &[Role], ttl: Duration) -> Result<String, Exit> {
    tokens.issue(user, roles, ttl).map_err(|e| Exit::new(exit::INTERNAL, e.to_string()))
}
