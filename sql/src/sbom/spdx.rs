//! SPDX 2.3 JSON: the image version as the described package, the system as a package of
//! purpose `OPERATING-SYSTEM` whose SPDXID starts `SPDXRef-OperatingSystem` (how Trivy finds
//! it), and one package per installed package with its purl (`PACKAGE-MANAGER` reference), its
//! source package in `sourceInfo` as Trivy reads it (`built package from: NAME VERSION`) and
//! its declared licenses: an SPDX expression where the image's words are one, else a
//! `LicenseRef-` with the words kept in `hasExtractedLicensingInfos`.

use super::{Inventory, purl::purl};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub fn document(inventory: &Inventory) -> Value {
    let root = format!("SPDXRef-DocumentRoot-Image-{}-{}", id_part(&inventory.image.name), inventory.image.version);
    let mut packages = vec![json!({
        "SPDXID": root,
        "name": inventory.image.name,
        "versionInfo": inventory.image.version.to_string(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "FILE",
        "comment": format!("imagelake image id {}, checked in from {}", inventory.image.image_id, inventory.image.source_format),
    })];
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", &root)];
    let holder = match inventory.os.family() {
        Some(family) => {
            let version = inventory.os.version_id.clone().unwrap_or_default();
            let os = format!("SPDXRef-OperatingSystem-{}-{}", id_part(family), id_part(&version));
            packages.push(json!({
                "SPDXID": os,
                "name": family,
                "versionInfo": version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "primaryPackagePurpose": "OPERATING-SYSTEM",
            }));
            relationships.push(relationship(&root, "CONTAINS", &os));
            os
        }
        None => root.clone(),
    };
    let mut extracted = Licenses::default();
    for (i, package) in inventory.packages.iter().enumerate() {
        let kind = if package.manager == "dpkg" { "deb" } else { package.manager.as_str() };
        let id = format!("SPDXRef-Package-{kind}-{}-{}", id_part(&package.name), i + 1);
        let declared = match package.licenses.as_deref() {
            Some(list) if !list.is_empty() => extracted.expression(list),
            _ => "NOASSERTION".to_string(),
        };
        let mut entry = json!({
            "SPDXID": id,
            "name": package.name,
            "versionInfo": package.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!("built package from: {} {}", package.source, package.source_version()),
            "primaryPackagePurpose": "LIBRARY",
        });
        if let Some(purl) = purl(&inventory.os, package) {
            entry["externalRefs"] =
                json!([{ "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl }]);
        }
        packages.push(entry);
        relationships.push(relationship(&holder, "CONTAINS", &id));
    }
    let mut document = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": inventory.title(),
        "documentNamespace": format!(
            "https://imagelake.invalid/spdx/{}-{}-{}",
            id_part(&inventory.image.name),
            inventory.image.version,
            inventory.uuid()
        ),
        "creationInfo": {
            "created": inventory.created(),
            "creators": [format!("Tool: imagelake-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !extracted.refs.is_empty() {
        let infos: Vec<Value> = (extracted.refs.iter())
            .map(|(words, id)| json!({ "licenseId": id, "name": words, "extractedText": words }))
            .collect();
        document["hasExtractedLicensingInfos"] = json!(infos);
    }
    document
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({ "spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to })
}

/// Text as an SPDX id allows it: letters, digits, `.` and `-`, anything else `-`.
fn id_part(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

/// The `LicenseRef-`s of a document, by the words they stand for.
#[derive(Default)]
struct Licenses {
    refs: BTreeMap<String, String>,
}

impl Licenses {
    /// The declared license of a package whose image says `list`: each the SPDX identifier it
    /// names (`super::spdx_id`), an SPDX expression as written, or the `LicenseRef-` of its
    /// words; several joined by AND (a package holds files under each), each once.
    fn expression(&mut self, list: &[String]) -> String {
        let mut terms: Vec<String> = Vec::new();
        for words in list {
            let term = self.term(words);
            if !terms.contains(&term) {
                terms.push(term);
            }
        }
        match terms.as_slice() {
            [one] => one.clone(),
            _ => terms
                .iter()
                .map(|t| if t.contains(' ') { format!("({t})") } else { t.clone() })
                .collect::<Vec<_>>()
                .join(" AND "),
        }
    }

    fn term(&mut self, words: &str) -> String {
        if let Some(id) = super::spdx_id(words) {
            return id.to_string();
        }
        if ::spdx::Expression::parse(words).is_ok() {
            return words.to_string();
        }
        if let Some(id) = self.refs.get(words) {
            return id.clone();
        }
        let base = format!("LicenseRef-{}", id_part(words));
        let mut id = base.clone();
        for n in 2.. {
            if !self.refs.values().any(|v| *v == id) {
                break;
            }
            id = format!("{base}-{n}");
        }
        self.refs.insert(words.to_string(), id.clone());
        id
    }
}
