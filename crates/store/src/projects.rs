//! Projects: creating and updating them with a unique name and slug, soft deletion, restoring,
//! purging, and listing them a page at a time.
//!
//! A soft-deleted project keeps its name and slug until it is purged, so restoring it can never
//! collide with a project created in between.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QueryResult, QuerySelect, QueryTrait, Select,
};
use uuid::Uuid;

use turbo_core::ids::ProjectId;
use turbo_core::project::ProjectMetadata;

use crate::Store;
use crate::codec::{body, col, to_body};
use crate::entity::project;
use crate::error::{Error, Result, db, is_unique_violation};
use crate::rows::{Cursor, Page, ProjectQuery, StoredProject};

/// Postgres advisory lock taken by writes that check name uniqueness, so two of them cannot
/// both see a name as free (SQLite's write transactions are serialized anyway).
const PROJECT_NAMES_LOCK: i64 = 0x7475_7262_6f70_726a; // "turboprj"

impl Store {
    /// Inserts the project, or replaces the stored one with the same id (undeleting it).
    /// Only the slug is checked for uniqueness; [`Store::create_project`] checks the name too.
    pub async fn upsert_project(&self, p: &ProjectMetadata) -> Result<()> {
        let mut am = project_columns(p)?;
        am.id = Set(p.id.0);
        am.created_at = Set(p.created_at);
        am.deleted_at = Set(None);
        use project::Column as C;
        let upsert = OnConflict::column(C::Id)
            .update_columns([C::Name, C::Slug, C::RootPath, C::Body, C::UpdatedAt, C::DeletedAt])
            .to_owned();
        match project::Entity::insert(am).on_conflict(upsert).exec_without_returning(&self.db).await {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict {
                what: format!("project {} ('{}')", p.id, p.name),
                reason: format!("slug '{}' is already used by another project; choose another slug", p.slug),
            }),
            Err(e) => Err(db(format!("store project {}", p.id))(e)),
        }
    }

    /// Stores a new project. Its name and slug must not be used by any stored project, deleted
    /// ones included: [`Error::Taken`] names the field and the project holding it.
    pub async fn create_project(&self, p: &ProjectMetadata) -> Result<()> {
        let txn = self.begin_project_names(&format!("create project {}", p.id)).await?;
        ensure_names_free(&txn, p, true, true).await?;
        let mut am = project_columns(p)?;
        am.id = Set(p.id.0);
        am.created_at = Set(p.created_at);
        am.deleted_at = Set(None);
        match project::Entity::insert(am).exec_without_returning(&txn).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Conflict {
                    what: format!("project {}", p.id),
                    reason: "a project with this id is already stored; use update_project to change it".to_string(),
                });
            }
            Err(e) => return Err(db(format!("insert project {}", p.id))(e)),
        }
        txn.commit().await.map_err(db(format!("commit project {}", p.id)))
    }

    /// Replaces a live project's name, slug, root path and body (the creation time stays).
    /// [`Error::NotFound`] when it is not stored or is deleted; [`Error::Taken`] when the new
    /// name or slug belongs to another project.
    pub async fn update_project(&self, p: &ProjectMetadata) -> Result<()> {
        let txn = self.begin_project_names(&format!("update project {}", p.id)).await?;
        let stored = match read_project(&txn, p.id).await? {
            Some(StoredProject { project, deleted_at: None }) => project,
            _ => return Err(Error::NotFound { what: "project", id: p.id.to_string() }),
        };
        // Only a changed name or slug is checked: projects made by `turbo-coder run` may share
        // a name (two checkouts of one repository), and keeping it must stay possible.
        ensure_names_free(&txn, p, stored.name != p.name, stored.slug != p.slug).await?;
        project::Entity::update_many()
            .set(project_columns(p)?)
            .filter(project::Column::Id.eq(p.id.0))
            .exec(&txn)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::Taken { field: "slug", value: p.slug.clone(), holder: "another project".to_string() }
                } else {
                    db(format!("update project {}", p.id))(e)
                }
            })?;
        txn.commit().await.map_err(db(format!("commit project {}", p.id)))
    }

    /// A project by id, deleted or not.
    pub async fn get_project(&self, id: ProjectId) -> Result<Option<StoredProject>> {
        read_project(&self.db, id).await
    }

    /// The live (not deleted) project rooted at `root_path`; the most recently updated one if
    /// several are.
    pub async fn project_by_root(&self, root_path: &str) -> Result<Option<ProjectMetadata>> {
        use project::Column as C;
        let q = select_projects()
            .filter(C::RootPath.eq(root_path))
            .filter(C::DeletedAt.is_null())
            .order_by_desc(C::UpdatedAt)
            .limit(1);
        let rows = rows_on(&self.db, q).await.map_err(db(format!("read project at {root_path}")))?;
        rows.first().map(stored_project).transpose().map(|p| p.map(|p| p.project))
    }

    /// Projects newest first, a page at a time.
    pub async fn list_projects(&self, query: ProjectQuery) -> Result<Page<StoredProject>> {
        use project::Column as C;
        let limit = query.limit.max(1);
        let mut q = select_projects().order_by_desc(C::CreatedAt).order_by_desc(C::Id).limit(limit + 1);
        if !query.include_deleted {
            q = q.filter(C::DeletedAt.is_null());
        }
        if let Some(after) = query.after {
            q = q.filter(before_cursor(C::CreatedAt, C::Id, after));
        }
        let rows = rows_on(&self.db, q).await.map_err(db("list projects"))?;
        let mut items = Vec::with_capacity(rows.len());
        let mut cursors = Vec::with_capacity(rows.len());
        for row in &rows {
            let p = stored_project(row)?;
            let created_at: DateTime<Utc> = col(row, "created_at", || format!("project {}", p.project.id))?;
            cursors.push(Cursor { created_at, id: p.project.id.0 });
            items.push(p);
        }
        Ok(page(items, cursors, limit))
    }

    /// Soft-deletes a live project at `at` and returns the stored deletion time.
    /// [`Error::NotFound`] when it is not stored or already deleted.
    pub async fn delete_project(&self, id: ProjectId, at: DateTime<Utc>) -> Result<DateTime<Utc>> {
        use project::Column as C;
        let res = project::Entity::update_many()
            .set(project::ActiveModel { deleted_at: Set(Some(at)), ..Default::default() })
            .filter(C::Id.eq(id.0))
            .filter(C::DeletedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(db(format!("delete project {id}")))?;
        if res.rows_affected == 0 {
            return Err(Error::NotFound { what: "project", id: id.to_string() });
        }
        match self.get_project(id).await? {
            Some(StoredProject { deleted_at: Some(t), .. }) => Ok(t),
            // Restored or purged by someone else right after.
            _ => Ok(at),
        }
    }

    /// Brings back a project deleted at or after `deleted_since` (older deletions are past the
    /// restore window). [`Error::NotFound`] when it is not stored, [`Error::WrongState`] when it
    /// is not deleted or was deleted before `deleted_since`.
    pub async fn restore_project(&self, id: ProjectId, deleted_since: DateTime<Utc>) -> Result<ProjectMetadata> {
        let txn = self.begin_write(&format!("restore project {id}")).await?;
        let stored = read_project(&txn, id).await?.ok_or(Error::NotFound { what: "project", id: id.to_string() })?;
        let what = || format!("project {id} ('{}')", stored.project.name);
        match stored.deleted_at {
            None => {
                return Err(Error::WrongState {
                    what: what(),
                    reason: "is not deleted; only deleted projects can be restored".to_string(),
                });
            }
            Some(t) if t < deleted_since => {
                return Err(Error::WrongState {
                    what: what(),
                    reason: format!(
                        "was deleted at {}, before {}: past the restore window it can no longer be restored",
                        t.to_rfc3339(),
                        deleted_since.to_rfc3339()
                    ),
                });
            }
            Some(_) => {}
        }
        project::Entity::update_many()
            .set(project::ActiveModel { deleted_at: Set(None), ..Default::default() })
            .filter(project::Column::Id.eq(id.0))
            .exec(&txn)
            .await
            .map_err(db(format!("restore project {id}")))?;
        txn.commit().await.map_err(db(format!("commit the restore of project {id}")))?;
        Ok(stored.project)
    }

    /// Removes for good the projects deleted before `deleted_before`, with their tasks and
    /// everything recorded about them. Returns how many projects went.
    pub async fn purge_projects(&self, deleted_before: DateTime<Utc>) -> Result<u64> {
        use project::Column as C;
        let res = project::Entity::delete_many()
            .filter(C::DeletedAt.is_not_null())
            .filter(C::DeletedAt.lt(deleted_before))
            .exec(&self.db)
            .await
            .map_err(db("purge deleted projects"))?;
        Ok(res.rows_affected)
    }

    /// A write transaction in which project names can be checked and then written without
    /// another writer slipping in between.
    async fn begin_project_names(&self, action: &str) -> Result<DatabaseTransaction> {
        let txn = self.begin_write(action).await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({PROJECT_NAMES_LOCK})"))
                .await
                .map_err(db(format!("lock project names to {action}")))?;
        }
        Ok(txn)
    }
}

/// Fails with [`Error::Taken`] when another project (deleted ones included) has `p`'s name
/// (when `name`) or slug (when `slug`).
async fn ensure_names_free<C: ConnectionTrait>(c: &C, p: &ProjectMetadata, name: bool, slug: bool) -> Result<()> {
    use project::Column as C;
    let mut same = Condition::any();
    if name {
        same = same.add(C::Name.eq(p.name.as_str()));
    }
    if slug {
        same = same.add(C::Slug.eq(p.slug.as_str()));
    }
    if !name && !slug {
        return Ok(());
    }
    let q = project::Entity::find()
        .select_only()
        .columns([C::Id, C::Name, C::Slug, C::DeletedAt])
        .filter(same)
        .filter(C::Id.ne(p.id.0))
        .order_by_asc(C::CreatedAt)
        .limit(10);
    let rows = rows_on(c, q).await.map_err(db(format!("check the name of project {}", p.id)))?;
    let mut clash: Option<Error> = None;
    for row in &rows {
        let id: Uuid = col(row, "id", || "a project row".to_string())?;
        let what = || format!("project {id}");
        let held_name: String = col(row, "name", what)?;
        let held_slug: String = col(row, "slug", what)?;
        let deleted_at: Option<DateTime<Utc>> = col(row, "deleted_at", what)?;
        let holder = match deleted_at {
            None => format!("project {id} ('{held_name}')"),
            Some(_) => format!("deleted project {id} ('{held_name}'), which can still be restored"),
        };
        // The name is reported first: it is what people choose; the slug is usually derived.
        if name && held_name == p.name {
            return Err(Error::Taken { field: "name", value: p.name.clone(), holder });
        }
        if slug && held_slug == p.slug && clash.is_none() {
            clash = Some(Error::Taken { field: "slug", value: p.slug.clone(), holder });
        }
    }
    clash.map_or(Ok(()), Err)
}

/// The columns every write of a project sets; inserts add id, creation and deletion times.
fn project_columns(p: &ProjectMetadata) -> Result<project::ActiveModel> {
    Ok(project::ActiveModel {
        id: NotSet,
        name: Set(p.name.clone()),
        slug: Set(p.slug.clone()),
        root_path: Set(p.root_path.clone()),
        body: Set(to_body(p, || format!("project {}", p.id))?),
        created_at: NotSet,
        updated_at: Set(p.updated_at),
        deleted_at: NotSet,
    })
}

fn select_projects() -> Select<project::Entity> {
    use project::Column as C;
    project::Entity::find().select_only().columns([C::Id, C::Body, C::CreatedAt, C::DeletedAt])
}

async fn read_project<C: ConnectionTrait>(c: &C, id: ProjectId) -> Result<Option<StoredProject>> {
    let q = select_projects().filter(project::Column::Id.eq(id.0));
    let rows = rows_on(c, q).await.map_err(db(format!("read project {id}")))?;
    rows.first().map(stored_project).transpose()
}

fn stored_project(row: &QueryResult) -> Result<StoredProject> {
    let id: Uuid = col(row, "id", || "a project row".to_string())?;
    let what = || format!("project {id}");
    let project: ProjectMetadata = body(col(row, "body", what)?, what)?;
    if project.id.0 != id {
        return Err(Error::Corrupt { what: what(), reason: format!("its body is project {}", project.id) });
    }
    let deleted_at = col(row, "deleted_at", what)?;
    Ok(StoredProject { project, deleted_at })
}

/// Runs a select on `c` (the pool or a transaction) and returns its raw rows.
pub(crate) async fn rows_on<C: ConnectionTrait, E: EntityTrait>(
    c: &C,
    q: Select<E>,
) -> std::result::Result<Vec<QueryResult>, sea_orm::DbErr> {
    c.query_all_raw(q.build(c.get_database_backend())).await
}

/// Rows that come after `after` in newest-first order (`created_at` desc, then `id` desc).
pub(crate) fn before_cursor<A: ColumnTrait, I: ColumnTrait>(created_at: A, id: I, after: Cursor) -> Condition {
    Condition::any()
        .add(created_at.lt(after.created_at))
        .add(Condition::all().add(created_at.eq(after.created_at)).add(id.lt(after.id)))
}

/// The first `limit` items, and a cursor after the last of them when more were read.
pub(crate) fn page<T>(mut items: Vec<T>, cursors: Vec<Cursor>, limit: u64) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if items.len() > limit {
        items.truncate(limit);
        Page { next: cursors.get(limit - 1).copied(), items }
    } else {
        Page { items, next: None }
    }
}
