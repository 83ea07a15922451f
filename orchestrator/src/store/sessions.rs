//! Console sessions: a signed-in browser holds a random session id, never
//! the bearer token. Only hashes are stored: the session id's (the row's key)
//! and its token's (whose caller the session speaks for, looked up in the
//! tokens in force at each request, so a token removed or expired ends its
//! sessions too). Signing out deletes the row; expired rows go at the next
//! sign-in. The table is shared by every instance, so a session works
//! whichever instance a request reaches.

use super::{Store, StoreError};
use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::{ConnectionTrait, DbBackend};

fn table() -> Alias {
    Alias::new("console_sessions")
}

impl Store {
    /// Open a session `id_hash` for the token with `token_hash` until `expires_at_ms`.
    ///
    /// # Errors
    /// [`StoreError::Db`] when the database refuses.
    pub async fn open_session(
        &self,
        id_hash: &str,
        token_hash: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let now = self.clock().now_db();
        let backend: DbBackend = self.db().get_database_backend();
        let prune = Query::delete()
            .from_table(table())
            .and_where(Expr::col(Alias::new("expires_at_ms")).lte(now))
            .to_owned();
        self.db().execute(backend.build(&prune)).await?;
        let insert = Query::insert()
            .into_table(table())
            .columns([
                Alias::new("id_sha256"),
                Alias::new("token_sha256"),
                Alias::new("expires_at_ms"),
            ])
            .values_panic([id_hash.into(), token_hash.into(), expires_at_ms.into()])
            .to_owned();
        self.db().execute(backend.build(&insert)).await?;
        Ok(())
    }

    /// The token hash of session `id_hash`, if it is open and not expired.
    ///
    /// # Errors
    /// [`StoreError::Db`] when the database refuses.
    pub async fn session_token(&self, id_hash: &str) -> Result<Option<String>, StoreError> {
        let now = self.clock().now_db();
        let backend = self.db().get_database_backend();
        let select = Query::select()
            .column(Alias::new("token_sha256"))
            .from(table())
            .and_where(Expr::col(Alias::new("id_sha256")).eq(id_hash))
            .and_where(Expr::col(Alias::new("expires_at_ms")).gt(now))
            .to_owned();
        let row = self.db().query_one(backend.build(&select)).await?;
        Ok(row.and_then(|r| r.try_get::<String>("", "token_sha256").ok()))
    }

    /// Close session `id_hash` (nothing when there is none).
    ///
    /// # Errors
    /// [`StoreError::Db`] when the database refuses.
    pub async fn close_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let backend = self.db().get_database_backend();
        let delete = Query::delete()
            .from_table(table())
            .and_where(Expr::col(Alias::new("id_sha256")).eq(id_hash))
            .to_owned();
        self.db().execute(backend.build(&delete)).await?;
        Ok(())
    }
}
