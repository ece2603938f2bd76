//! CycloneDX 1.5 and 1.6 JSON: the image version as the BOM's subject (a `file`), one
//! `operating-system` component named as scanners know the system (no purl), and one
//! `library` component per package with its purl, its licenses and the properties scanners
//! look for: syft's (`syft:package:type`, `syft:metadata:source`, `sourceVersion`,
//! `sourceRpm`, `originPackage`, which grype reads) and Trivy's (`aquasecurity:trivy:SrcName`,
//! `SrcVersion`, `SrcRelease`, `SrcEpoch`: Trivy matches Debian and Alpine advisories by source
//! package, and takes them from nowhere else). `dependencies` say the subject holds the system
//! and the system its packages. `vulnerabilities` holds the VEX statements that cover the
//! version: each its advisory, its analysis (state, justification, detail, when it was
//! issued), who made it, and the components it is about.

use super::{Analysis, Inventory, Package, purl::purl, rfc3339, split_version};
use serde_json::{Value, json};
use std::collections::HashSet;

pub fn document(inventory: &Inventory, spec_version: &str) -> Value {
    let subject = format!("imagelake:image:{}", inventory.title());
    let os = inventory.os.family().map(|family| {
        let version = inventory.os.version_id.clone().unwrap_or_default();
        let reference = format!("os:{family}@{version}");
        let mut properties = vec![property("syft:distro:id", inventory.os.id.as_deref().unwrap_or(family))];
        if !version.is_empty() {
            properties.push(property("syft:distro:versionID", &version));
        }
        let component = json!({
            "bom-ref": reference,
            "type": "operating-system",
            "name": family,
            "version": version,
            "properties": properties,
        });
        (reference, component)
    });
    let mut components = Vec::new();
    let mut references = Vec::new();
    let mut seen = HashSet::new();
    for package in &inventory.packages {
        let purl = purl(&inventory.os, package);
        let base = purl.clone().unwrap_or_else(|| format!("imagelake:package:{}:{}", package.manager, package.name));
        // A reference is unique within the BOM; two rows of one purl (a damaged database)
        // get a suffix rather than one being dropped.
        let mut reference = base.clone();
        for n in 2.. {
            if seen.insert(reference.clone()) {
                break;
            }
            reference = format!("{base}#{n}");
        }
        let mut component = json!({
            "bom-ref": reference,
            "type": "library",
            "name": package.name,
            "version": package.version,
        });
        if let Some(purl) = purl {
            component["purl"] = json!(purl);
        }
        if let Some(licenses) = licenses(package) {
            component["licenses"] = licenses;
        }
        component["properties"] = json!(properties(package));
        references.push(reference);
        components.push(component);
    }
    let mut dependencies = Vec::new();
    match &os {
        Some((os_reference, component)) => {
            components.push(component.clone());
            dependencies.push(json!({ "ref": subject, "dependsOn": [os_reference] }));
            dependencies.push(json!({ "ref": os_reference, "dependsOn": references }));
        }
        None => dependencies.push(json!({ "ref": subject, "dependsOn": references })),
    }
    let mut document = json!({
        "bomFormat": "CycloneDX",
        "specVersion": spec_version,
        "serialNumber": format!("urn:uuid:{}", inventory.uuid()),
        "version": 1,
        "metadata": {
            "timestamp": inventory.created(),
            "tools": {
                "components": [{ "type": "application", "name": "imagelake", "version": env!("CARGO_PKG_VERSION") }]
            },
            "component": {
                "bom-ref": subject,
                "type": "file",
                "name": inventory.image.name,
                "version": inventory.image.version.to_string(),
                "properties": [
                    property("imagelake:image_id", &inventory.image.image_id.to_string()),
                    property("imagelake:source_format", &inventory.image.source_format),
                ],
            },
        },
        "components": components,
        "dependencies": dependencies,
    });
    if !inventory.analyses.is_empty() {
        let analyses = inventory.analyses.iter().map(|a| vulnerability(a, &references, &subject));
        document["vulnerabilities"] = json!(analyses.collect::<Vec<_>>());
    }
    document
}

/// A VEX statement as a CycloneDX vulnerability: its advisory (as the statement names it), its
/// analysis, and the packages it covers, or the image where its advisory matches none of them.
fn vulnerability(analysis: &Analysis, references: &[String], subject: &str) -> Value {
    let statement = &analysis.statement;
    let mut affects: Vec<Value> = analysis.packages.iter().map(|&i| json!({ "ref": references[i] })).collect();
    if affects.is_empty() {
        affects.push(json!({ "ref": subject }));
    }
    let mut said = json!({ "state": statement.state, "firstIssued": rfc3339(statement.at) });
    if let Some(justification) = &statement.justification {
        said["justification"] = json!(justification);
    }
    if let Some(detail) = &statement.detail {
        said["detail"] = json!(detail);
    }
    json!({
        "bom-ref": format!("imagelake:vex:{}", statement.id),
        "id": statement.advisory,
        "analysis": said,
        "affects": affects,
        "properties": [property("imagelake:vex:id", &statement.id), property("imagelake:vex:actor", &statement.actor)],
    })
}

fn property(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

/// The package's licenses: those whose words name an SPDX identifier (`super::spdx_id`) as
/// `id`, any other words as `name`, each once; none when the image states none (or was
/// checked in before licenses were kept).
fn licenses(package: &Package) -> Option<Value> {
    let list = package.licenses.as_ref().filter(|l| !l.is_empty())?;
    let mut entries: Vec<Value> = Vec::new();
    for words in list {
        let entry = match super::spdx_id(words) {
            Some(id) => json!({ "license": { "id": id } }),
            None => json!({ "license": { "name": words } }),
        };
        if !entries.contains(&entry) {
            entries.push(entry);
        }
    }
    Some(json!(entries))
}

/// syft's and Trivy's properties of a package.
fn properties(package: &Package) -> Vec<Value> {
    let mut out = Vec::new();
    let kind = match package.manager.as_str() {
        "dpkg" => "deb",
        other => other,
    };
    out.push(property("syft:package:type", kind));
    let source_version = package.source_version();
    match package.manager.as_str() {
        "dpkg" => {
            out.push(property("syft:metadata:source", &package.source));
            out.push(property("syft:metadata:sourceVersion", source_version));
        }
        "rpm" => {
            if let Some(epoch) = package.epoch {
                out.push(property("syft:metadata:epoch", &epoch.to_string()));
            }
            if let Some(release) = &package.release {
                out.push(property("syft:metadata:release", release));
            }
            if let Some(source_rpm) = &package.source_rpm {
                out.push(property("syft:metadata:sourceRpm", source_rpm));
            }
        }
        "apk" => out.push(property("syft:metadata:originPackage", &package.source)),
        _ => {}
    }
    // Trivy's source package: epoch, version and release apart, as it splits dpkg and rpm
    // versions (an apk version stays whole).
    let (epoch, version, release) =
        if package.manager == "apk" { (None, source_version, None) } else { split_version(source_version) };
    out.push(property("aquasecurity:trivy:SrcName", &package.source));
    if let Some(epoch) = epoch {
        out.push(property("aquasecurity:trivy:SrcEpoch", epoch));
    }
    out.push(property("aquasecurity:trivy:SrcVersion", version));
    if let Some(release) = release {
        out.push(property("aquasecurity:trivy:SrcRelease", release));
    }
    out
}
