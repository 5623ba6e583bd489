//! The gateway's users and their API keys. A user has a unique name and roles (names the
//! gateway understands, e.g. `developer`); a disabled user keeps its row (the audit log names
//! it) but no longer gets in. An API key is stored as the SHA-256 of its text (the caller
//! hashes; the store never sees a key) with a short prefix to recognise it, and can be revoked.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use crate::Store;
use crate::entity::{api_key, user};
use crate::error::{Error, Result, db, is_unique_violation};

/// A stored user. Times are kept to the microsecond.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredUser {
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A stored API key (without the key, which is not kept).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredApiKey {
    pub id: Uuid,
    pub user: String,
    pub label: String,
    /// The key's first characters.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

fn user_of(r: user::Model) -> StoredUser {
    StoredUser {
        name: r.name,
        roles: r.roles.split(',').filter(|r| !r.is_empty()).map(str::to_string).collect(),
        created_at: r.created_at,
        disabled_at: r.disabled_at,
    }
}

fn key_of(r: api_key::Model) -> StoredApiKey {
    StoredApiKey {
        id: r.id,
        user: r.user_name,
        label: r.label,
        prefix: r.prefix,
        created_at: r.created_at,
        last_used_at: r.last_used_at,
        revoked_at: r.revoked_at,
    }
}

fn not_found(what: &'static str, id: impl ToString) -> Error {
    Error::NotFound { what, id: id.to_string() }
}

impl Store {
    /// Stores a new user; [`Error::Taken`] when the name is.
    pub async fn create_user(&self, name: &str, roles: &[String], at: DateTime<Utc>) -> Result<StoredUser> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(Error::Invalid {
                what: format!("user name '{name}'"),
                reason: "use 1 to 200 printable characters".into(),
            });
        }
        if roles.is_empty() || roles.iter().any(|r| r.is_empty() || r.contains(',')) {
            return Err(Error::Invalid {
                what: format!("roles of user '{name}'"),
                reason: "name at least one role".into(),
            });
        }
        if self.get_user(name).await?.is_some() {
            return Err(Error::Taken { field: "name", value: name.into(), holder: format!("user '{name}'") });
        }
        let row = user::ActiveModel {
            name: Set(name.to_string()),
            roles: Set(roles.join(",")),
            created_at: Set(at.trunc_subsecs(6)),
            disabled_at: Set(None),
        };
        // A concurrent create of the same name loses on the primary key.
        user::Entity::insert(row).exec(&self.db).await.map_err(|e| match is_unique_violation(&e) {
            true => Error::Taken { field: "name", value: name.into(), holder: format!("user '{name}'") },
            false => db(format!("create user {name}"))(e),
        })?;
        self.get_user(name).await?.ok_or_else(|| not_found("user", name))
    }

    pub async fn get_user(&self, name: &str) -> Result<Option<StoredUser>> {
        let row =
            user::Entity::find_by_id(name.to_string()).one(&self.db).await.map_err(db(format!("read user {name}")))?;
        Ok(row.map(user_of))
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<StoredUser>> {
        let rows =
            user::Entity::find().order_by_asc(user::Column::Name).all(&self.db).await.map_err(db("list users"))?;
        Ok(rows.into_iter().map(user_of).collect())
    }

    /// Disables a user (their tokens and keys stop working); a no-op for a disabled one.
    pub async fn disable_user(&self, name: &str, at: DateTime<Utc>) -> Result<StoredUser> {
        use user::Column as C;
        user::Entity::update_many()
            .col_expr(C::DisabledAt, Some(at.trunc_subsecs(6)).into())
            .filter(C::Name.eq(name))
            .filter(C::DisabledAt.is_null())
            .exec(&self.db)
            .await
            .map_err(db(format!("disable user {name}")))?;
        self.get_user(name).await?.ok_or_else(|| not_found("user", name))
    }

    /// Stores an API key of an enabled user by the SHA-256 `hash` of its text.
    pub async fn add_api_key(
        &self,
        user_name: &str,
        label: &str,
        prefix: &str,
        hash: &str,
        at: DateTime<Utc>,
    ) -> Result<StoredApiKey> {
        let owner = self.get_user(user_name).await?.ok_or_else(|| not_found("user", user_name))?;
        if owner.disabled_at.is_some() {
            return Err(Error::WrongState {
                what: format!("user '{user_name}'"),
                reason: "is disabled: a disabled user gets no new key".into(),
            });
        }
        let id = Uuid::new_v4();
        let row = api_key::ActiveModel {
            id: Set(id),
            user_name: Set(user_name.to_string()),
            label: Set(label.to_string()),
            prefix: Set(prefix.to_string()),
            hash: Set(hash.to_string()),
            created_at: Set(at.trunc_subsecs(6)),
            last_used_at: Set(None),
            revoked_at: Set(None),
        };
        api_key::Entity::insert(row).exec(&self.db).await.map_err(db(format!("add an API key for {user_name}")))?;
        let row = api_key::Entity::find_by_id(id).one(&self.db).await.map_err(db(format!("read API key {id}")))?;
        row.map(key_of).ok_or_else(|| not_found("API key", id))
    }

    /// The key with this hash and its user, revoked or not.
    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<(StoredApiKey, StoredUser)>> {
        let row = api_key::Entity::find()
            .filter(api_key::Column::Hash.eq(hash))
            .one(&self.db)
            .await
            .map_err(db("look up an API key"))?;
        let Some(key) = row.map(key_of) else { return Ok(None) };
        let owner = self.get_user(&key.user).await?.ok_or_else(|| not_found("user", &key.user))?;
        Ok(Some((key, owner)))
    }

    /// Records that a key was used at `at`.
    pub async fn touch_api_key(&self, id: Uuid, at: DateTime<Utc>) -> Result<()> {
        use api_key::Column as C;
        api_key::Entity::update_many()
            .col_expr(C::LastUsedAt, Some(at.trunc_subsecs(6)).into())
            .filter(C::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(db(format!("record the use of API key {id}")))?;
        Ok(())
    }

    /// A user's keys, oldest first.
    pub async fn list_api_keys(&self, user_name: &str) -> Result<Vec<StoredApiKey>> {
        use api_key::Column as C;
        let rows = api_key::Entity::find()
            .filter(C::UserName.eq(user_name))
            .order_by_asc(C::CreatedAt)
            .all(&self.db)
            .await
            .map_err(db(format!("list the API keys of {user_name}")))?;
        Ok(rows.into_iter().map(key_of).collect())
    }

    /// Revokes a key; a no-op for a revoked one.
    pub async fn revoke_api_key(&self, id: Uuid, at: DateTime<Utc>) -> Result<StoredApiKey> {
        use api_key::Column as C;
        api_key::Entity::update_many()
            .col_expr(C::RevokedAt, Some(at.trunc_subsecs(6)).into())
            .filter(C::Id.eq(id))
            .filter(C::RevokedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(db(format!("revoke API key {id}")))?;
        let row = api_key::Entity::find_by_id(id).one(&self.db).await.map_err(db(format!("read API key {id}")))?;
        row.map(key_of).ok_or_else(|| not_found("API key", id))
    }
}
