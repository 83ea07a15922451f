//! Saga definitions known to this orchestrator, by name and by content hash.
//!
//! Definitions are read from a directory of YAML files at start-up and every
//! version is recorded in the `definitions` table, so a saga started under an
//! older version keeps replaying with exactly that version after an upgrade.
//! New starts use the newest version of each name found in the directory.

use crate::store::{Store, StoreError};
use sagas::Definition;
use sagas::definition::{self, DefinitionErrors};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the definitions directory {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error("no saga definitions (*.yaml) found in {dir}")]
    Empty { dir: String },
    #[error("invalid definition:\n{0}")]
    Invalid(DefinitionErrors),
    #[error(
        "definition `{name}` version {version} differs from the version {version} stored earlier; bump `version` when you change a definition"
    )]
    Changed { name: String, version: u32 },
    #[error(
        "`{name}` version {version} is not newer than the newest version {newest}; raise `version`"
    )]
    NotNewer { name: String, version: u32, newest: u32 },
    #[error("two files define `{name}` version {version}")]
    Duplicate { name: String, version: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Default)]
struct Inner {
    by_hash: HashMap<String, Arc<Definition>>,
    newest: HashMap<String, Arc<Definition>>,
}

impl Inner {
    fn add_current(&mut self, d: Arc<Definition>) -> Result<(), RegistryError> {
        if let Some(other) = self.newest.get(&d.name) {
            if other.version == d.version {
                return Err(RegistryError::Duplicate { name: d.name.clone(), version: d.version });
            }
            if other.version > d.version {
                self.by_hash.insert(d.hash.clone(), d);
                return Ok(());
            }
        }
        self.by_hash.insert(d.hash.clone(), d.clone());
        self.newest.insert(d.name.clone(), d);
        Ok(())
    }
}

/// The definitions served. Shared by every task; a lock is held only for a
/// map lookup or insert, never across an `.await`.
#[derive(Debug, Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

impl Registry {
    /// Definitions from memory only (tests, tools). Does not touch a store.
    pub fn from_definitions(
        defs: impl IntoIterator<Item = Definition>,
    ) -> Result<Self, RegistryError> {
        let mut inner = Inner::default();
        for d in defs {
            inner.add_current(Arc::new(d))?;
        }
        Ok(Self { inner: RwLock::new(inner) })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-written
        // (every write is one insert), so a poisoned lock is still sound.
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Load every `*.yaml` in `dir`, record them in the store, and load every
    /// version stored earlier.
    pub async fn load(store: &Store, dir: &Path) -> Result<Self, RegistryError> {
        let label = dir.display().to_string();
        let entries = std::fs::read_dir(dir)
            .map_err(|source| RegistryError::Dir { dir: label.clone(), source })?;
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(RegistryError::Empty { dir: label });
        }
        let defs = paths
            .iter()
            .map(|p| definition::load_file(p).map_err(RegistryError::Invalid))
            .collect::<Result<Vec<_>, _>>()?;
        Self::with_store(store, defs).await
    }

    /// Register `defs` as current, record them, and load stored older versions.
    pub async fn with_store(store: &Store, defs: Vec<Definition>) -> Result<Self, RegistryError> {
        let r = Self::from_definitions(defs)?;
        r.refresh(store).await?;
        let now = store.clock().now_db();
        let current: Vec<Arc<Definition>> = r.read().newest.values().cloned().collect();
        for d in current {
            store.save_definition(&d.hash, &d.name, d.version, &d.canonical_json, now).await?;
        }
        Ok(r)
    }

    /// Load versions stored by anyone (another instance, the API) that this
    /// registry does not know yet. A stored version newer than the newest known
    /// becomes the one new starts use.
    pub async fn refresh(&self, store: &Store) -> Result<(), RegistryError> {
        let stored = store.definitions().await?;
        for row in stored {
            if self.read().by_hash.contains_key(&row.hash) {
                continue;
            }
            let old = definition::load(&format!("stored definition {}", row.hash), &row.body)
                .map_err(RegistryError::Invalid)?;
            let mut inner = self.write();
            let clash = inner.newest.get(&old.name).is_some_and(|d| d.version == old.version);
            if clash {
                return Err(RegistryError::Changed { name: old.name, version: old.version });
            }
            inner.add_current(Arc::new(old))?;
        }
        Ok(())
    }

    /// Register a new version of a definition (from the API): recorded in the
    /// store first, then served. Its version must be higher than any known
    /// version of the same name; the same content again is accepted as is.
    pub async fn register(
        &self,
        store: &Store,
        d: Definition,
    ) -> Result<Arc<Definition>, RegistryError> {
        self.refresh(store).await?;
        if let Some(known) = self.by_hash(&d.hash) {
            return Ok(known);
        }
        if let Some(newest) = self.newest(&d.name)
            && newest.version >= d.version
        {
            return Err(RegistryError::NotNewer {
                name: d.name.clone(),
                version: d.version,
                newest: newest.version,
            });
        }
        let now = store.clock().now_db();
        store.save_definition(&d.hash, &d.name, d.version, &d.canonical_json, now).await?;
        let d = Arc::new(d);
        self.write().add_current(d.clone())?;
        Ok(d)
    }

    /// The version new sagas of this type start with.
    #[must_use]
    pub fn newest(&self, name: &str) -> Option<Arc<Definition>> {
        self.read().newest.get(name).cloned()
    }

    /// The exact version a saga started with.
    #[must_use]
    pub fn by_hash(&self, hash: &str) -> Option<Arc<Definition>> {
        self.read().by_hash.get(hash).cloned()
    }

    /// Version `version` of `name`, if known.
    #[must_use]
    pub fn version(&self, name: &str, version: u32) -> Option<Arc<Definition>> {
        self.read().by_hash.values().find(|d| d.name == name && d.version == version).cloned()
    }

    /// Every version known, newest version of each name first.
    #[must_use]
    pub fn all(&self) -> Vec<Arc<Definition>> {
        let mut all: Vec<Arc<Definition>> = self.read().by_hash.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name).then(b.version.cmp(&a.version)));
        all
    }

    /// Names of the saga types that can be started.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().newest.keys().cloned().collect();
        names.sort();
        names
    }
}
