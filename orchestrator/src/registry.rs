//! Saga definitions known to this orchestrator, by name and by content hash.
//!
//! Definitions are read from a directory of YAML files at start-up and every
//! version is recorded in the `definitions` table, so a saga started under an
//! older version keeps replaying with exactly that version after an upgrade.
//! New starts use the newest version of each name found in the directory.

use crate::clock;
use crate::store::{Store, StoreError};
use sagas::Definition;
use sagas::definition::{self, DefinitionErrors};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

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
    #[error("two files define `{name}` version {version}")]
    Duplicate { name: String, version: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Default)]
pub struct Registry {
    by_hash: HashMap<String, Arc<Definition>>,
    newest: HashMap<String, Arc<Definition>>,
}

impl Registry {
    /// Definitions from memory only (tests, tools). Does not touch a store.
    pub fn from_definitions(
        defs: impl IntoIterator<Item = Definition>,
    ) -> Result<Self, RegistryError> {
        let mut r = Self::default();
        for d in defs {
            r.add_current(Arc::new(d))?;
        }
        Ok(r)
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
        let mut r = Self::from_definitions(defs)?;
        let stored = store.definitions().await?;
        for row in stored {
            if r.by_hash.contains_key(&row.hash) {
                continue;
            }
            let old = definition::load(&format!("stored definition {}", row.hash), &row.body)
                .map_err(RegistryError::Invalid)?;
            let clash = r.newest.get(&old.name).is_some_and(|d| d.version == old.version);
            if clash {
                return Err(RegistryError::Changed { name: old.name, version: old.version });
            }
            r.by_hash.insert(old.hash.clone(), Arc::new(old));
        }
        let now = clock::to_db(clock::now());
        for d in r.newest.values() {
            store.save_definition(&d.hash, &d.name, d.version, &d.canonical_json, now).await?;
        }
        Ok(r)
    }

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

    /// The version new sagas of this type start with.
    #[must_use]
    pub fn newest(&self, name: &str) -> Option<Arc<Definition>> {
        self.newest.get(name).cloned()
    }

    /// The exact version a saga started with.
    #[must_use]
    pub fn by_hash(&self, hash: &str) -> Option<Arc<Definition>> {
        self.by_hash.get(hash).cloned()
    }

    /// Names of the saga types that can be started.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.newest.keys().cloned().collect();
        names.sort();
        names
    }
}
