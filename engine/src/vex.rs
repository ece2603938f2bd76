//! VEX statements: a person's word that an advisory does not affect some images, kept in the
//! catalog's `vex` table with who said it and when, and honoured by `vulnerabilities` (SQL),
//! which leaves out the rows a standing statement covers (`suppressed_vulnerabilities` lists
//! them, with the statement), and by the SBOM, whose CycloneDX `vulnerabilities` carry each
//! statement's analysis.
//!
//! A statement names the advisory by its id or any alias (`CVE-2024-1234` covers the DSA that
//! lists it), the images by name or glob (one version of them, if it says), and optionally one
//! package, by binary or source name. Its state and justification are CycloneDX's words, so
//! that they pass into the SBOM as they are. Statements are never deleted: revoking one
//! records who revoked it and when, as Dependency-Track keeps its audit trail.

use crate::access::Pattern;
use crate::catalog::VexRow;
use crate::{Error, Library, Result};

/// The analysis states a statement may take: both mean "not a vulnerability of this image".
pub const STATES: [&str; 2] = ["not_affected", "false_positive"];

/// CycloneDX's justifications of `not_affected`.
pub const JUSTIFICATIONS: [&str; 9] = [
    "code_not_present",
    "code_not_reachable",
    "requires_configuration",
    "requires_dependency",
    "requires_environment",
    "protected_by_compiler",
    "protected_at_runtime",
    "protected_at_perimeter",
    "protected_by_mitigating_control",
];

/// What a user states, before it is checked and kept.
#[derive(Debug, Clone, Default)]
pub struct Statement {
    pub advisory: String,
    /// An image name or glob, optionally `@VERSION`.
    pub image: String,
    pub package: Option<String>,
    pub state: String,
    pub justification: Option<String>,
    pub detail: Option<String>,
}

/// The longest free text a statement keeps.
const MAX_DETAIL: usize = 4096;

impl Statement {
    /// The row this statement is, once every part is checked; an error names the part.
    fn row(&self, id: String, actor: String, at: i64) -> Result<VexRow> {
        let advisory = self.advisory.trim();
        let id_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
        if advisory.is_empty() || advisory.len() > 128 || !advisory.chars().all(id_char) {
            return Err(Error::User(format!(
                "VEX: {advisory:?} is not an advisory id or alias (such as CVE-2024-1234 or DSA-5000-1)"
            )));
        }
        let (pattern, version) = match self.image.rsplit_once('@') {
            Some((name, number)) => {
                let version = number.parse::<i64>().ok().filter(|v| *v >= 1).ok_or_else(|| {
                    Error::User(format!("VEX: {:?}: the version after '@' is not a number from 1", self.image))
                })?;
                (name, Some(version))
            }
            None => (self.image.as_str(), None),
        };
        let pattern = Pattern::parse(pattern).map_err(|e| Error::User(format!("VEX: {e}")))?;
        let package = match self.package.as_deref().map(str::trim) {
            Some(p) if p.is_empty() || p.len() > 256 || p.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(Error::User(format!("VEX: {p:?} is not a package name")));
            }
            p => p.map(str::to_string),
        };
        let state = self.state.trim();
        if !STATES.contains(&state) {
            return Err(Error::User(format!("VEX: unknown state {state:?}; the states are {}", STATES.join(", "))));
        }
        let justification = self.justification.as_deref().map(str::trim).filter(|j| !j.is_empty());
        match justification {
            Some(j) if !JUSTIFICATIONS.contains(&j) => {
                return Err(Error::User(format!(
                    "VEX: unknown justification {j:?}; CycloneDX's are {}",
                    JUSTIFICATIONS.join(", ")
                )));
            }
            None if state == "not_affected" => {
                return Err(Error::User(format!(
                    "VEX: not_affected needs a justification: one of {}",
                    JUSTIFICATIONS.join(", ")
                )));
            }
            _ => {}
        }
        let detail = self.detail.as_deref().map(str::trim).filter(|d| !d.is_empty());
        if detail.is_some_and(|d| d.len() > MAX_DETAIL || d.chars().any(|c| c.is_control() && c != '\n')) {
            return Err(Error::User(format!(
                "VEX: the detail is longer than {MAX_DETAIL} bytes or holds control characters"
            )));
        }
        Ok(VexRow {
            id,
            advisory: advisory.to_string(),
            image: pattern.as_str().to_string(),
            version,
            package,
            state: state.to_string(),
            justification: justification.map(str::to_string),
            detail: detail.map(str::to_string),
            actor,
            at,
            revoked_by: None,
            revoked_at: None,
        })
    }
}

impl VexRow {
    /// True when the statement stands (is not revoked) and covers the version `version` of
    /// the image called `name`.
    pub fn covers(&self, name: &str, version: i64) -> bool {
        self.revoked_at.is_none()
            && crate::access::glob_matches(&self.image, name)
            && self.version.is_none_or(|v| v == version)
    }
}

impl Library {
    /// Keeps `statement`, with the acting user and the time, and returns it as kept.
    pub async fn add_vex(&self, statement: &Statement) -> Result<VexRow> {
        let mut id = crate::storage::random_name().map_err(|e| Error::Internal(e.to_string()))?;
        id.truncate(16);
        let row = statement.row(id, crate::library::actor(), crate::now_ns())?;
        let _writing = self.writing().await?;
        let _lock = self.lock()?;
        self.catalog().append(std::slice::from_ref(&row)).await?;
        Ok(row)
    }

    /// Every statement, revoked ones included, oldest first.
    pub async fn vex(&self) -> Result<Vec<VexRow>> {
        self.catalog().vex_statements().await
    }

    /// Revokes the standing statement `id`: `vulnerabilities` lists what it covered again.
    pub async fn revoke_vex(&self, id: &str) -> Result<VexRow> {
        let _writing = self.writing().await?;
        let _lock = self.lock()?;
        let standing = |rows: Vec<VexRow>| rows.into_iter().find(|r| r.id == id);
        match standing(self.vex().await?) {
            None => return Err(Error::User(format!("no VEX statement {id}"))),
            Some(row) if row.revoked_at.is_some() => {
                return Err(Error::User(format!(
                    "VEX statement {id} was revoked already, by {}",
                    row.revoked_by.unwrap_or_default()
                )));
            }
            Some(_) => {}
        }
        self.catalog().revoke_vex(id, &crate::library::actor(), crate::now_ns()).await?;
        standing(self.vex().await?).ok_or_else(|| Error::Internal(format!("VEX statement {id} is gone")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(advisory: &str, image: &str, state: &str, justification: Option<&str>) -> Statement {
        Statement {
            advisory: advisory.into(),
            image: image.into(),
            state: state.into(),
            justification: justification.map(Into::into),
            ..Statement::default()
        }
    }

    #[test]
    fn statements_are_checked_part_by_part() {
        let row = |s: Statement| s.row("0123456789abcdef".into(), "ann".into(), 1);
        let kept = row(statement("CVE-2024-1234", "web*@3", "not_affected", Some("code_not_reachable"))).unwrap();
        assert_eq!((kept.image.as_str(), kept.version), ("web*", Some(3)));
        assert!(kept.covers("web-1", 3) && !kept.covers("web-1", 2) && !kept.covers("db", 3));
        assert!(row(statement("CVE-1", "*", "false_positive", None)).unwrap().covers("anything", 9));
        for (bad, says) in [
            (statement("CVE 1", "*", "not_affected", Some("code_not_present")), "not an advisory id"),
            (statement("CVE-1", "web/../x", "not_affected", Some("code_not_present")), "not an image pattern"),
            (statement("CVE-1", "web@0", "not_affected", Some("code_not_present")), "not a number from 1"),
            (statement("CVE-1", "web", "affected", None), "unknown state"),
            (statement("CVE-1", "web", "not_affected", None), "needs a justification"),
            (statement("CVE-1", "web", "not_affected", Some("trust_me")), "unknown justification"),
        ] {
            let error = row(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
        }
        let mut spaced = statement("CVE-1", "web", "false_positive", None);
        spaced.package = Some("lib c".into());
        assert!(row(spaced).unwrap_err().to_string().contains("not a package name"));
    }
}
