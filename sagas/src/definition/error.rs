//! Definition errors that tell the author where and how to fix the file, and
//! the wording they share: how a step is named, what a typo probably meant.

/// One problem in a definition file: where it is, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}field `{field}`: {problem}. Fix: {fix}", step.as_ref().map(|s| format!("step `{s}`, ")).unwrap_or_default())]
pub struct DefinitionError {
    /// The file (or source label) the definition came from.
    pub file: String,
    /// The step the problem is in, if it is inside one.
    pub step: Option<String>,
    /// The field, as a dotted path relative to the step (or the file when `step` is `None`).
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

/// Every problem found in one definition file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionErrors(pub Vec<DefinitionError>);

impl std::fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DefinitionErrors {}

impl DefinitionErrors {
    /// True when some error's message contains `needle` (used by tests and tools).
    #[must_use]
    pub fn mentions(&self, needle: &str) -> bool {
        self.0.iter().any(|e| e.to_string().contains(needle))
    }
}

/// Most problems listed for one file; the rest are counted in a last line.
pub const ERRORS_MAX: usize = 50;
/// Most names listed in one message (known fields, steps, properties).
pub const NAMES_LISTED_MAX: usize = 20;
/// Most candidates a typo is compared with.
const TYPO_CANDIDATES_MAX: usize = 200;

/// Collects errors for one file while validation walks it: at most
/// [`ERRORS_MAX`], the others only counted.
#[derive(Debug)]
pub(crate) struct Collector {
    file: String,
    errors: Vec<DefinitionError>,
    unlisted: usize,
}

impl Collector {
    pub fn new(file: &str) -> Self {
        Self { file: file.to_owned(), errors: Vec::new(), unlisted: 0 }
    }

    /// No problem found so far.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn push(
        &mut self,
        step: Option<&str>,
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        if self.errors.len() == ERRORS_MAX {
            self.unlisted += 1;
            return;
        }
        self.errors.push(DefinitionError {
            file: self.file.clone(),
            step: step.map(str::to_owned),
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// The problems found, with a last one counting those not listed.
    pub fn finish(mut self) -> DefinitionErrors {
        if self.unlisted > 0 {
            self.errors.push(DefinitionError {
                file: self.file,
                step: None,
                field: "(file)".into(),
                problem: format!(
                    "has {} more problem(s), not listed after the first {ERRORS_MAX}",
                    self.unlisted
                ),
                fix: "fix the ones above and validate again".into(),
            });
        }
        DefinitionErrors(self.errors)
    }
}

/// `names` for a message: at most [`NAMES_LISTED_MAX`] of them, then how
/// many more there are.
pub(super) fn listing(names: &[&str]) -> String {
    let shown = names[..names.len().min(NAMES_LISTED_MAX)].join(", ");
    match names.len().saturating_sub(NAMES_LISTED_MAX) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// `did you mean `x`? ` for the candidate closest to `word`, if one is close
/// enough to be a likely typo; else nothing.
pub(super) fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .take(TYPO_CANDIDATES_MAX)
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| format!("did you mean `{c}`? "))
        .unwrap_or_default()
}

/// How errors name a step: by its name, or by its position (`#2`) when it has none.
pub(super) fn step_label(index: usize, name: &str) -> String {
    if name.is_empty() { format!("#{}", index + 1) } else { name.to_owned() }
}
