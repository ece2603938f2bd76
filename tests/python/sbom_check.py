"""Checks SBOM files with the official validators, offline, for tests/tests/sbom.rs.

    sbom_check.py FILE...

For each file prints one JSON line: {"file", "format", "spec_version", "errors", "packages",
"purls", "bad_purls"}. CycloneDX files go through cyclonedx-python-lib's strict JSON validator
of the file's own spec version; SPDX files through spdx-tools' parser and full validation.
`packages` lists [name, version, arch] of every package (the operating system and the
described image left out), `arch` from the purl's qualifier. Every purl is parsed with
packageurl-python; one that does not parse, or does not print back as written, is listed in
`bad_purls` with why.
"""

import json
import sys

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document


def check_purl(purl, bad):
    try:
        parsed = PackageURL.from_string(purl)
    except ValueError as e:
        bad.append([purl, str(e)])
        return None
    if parsed.to_string() != purl:
        bad.append([purl, "prints back as " + parsed.to_string()])
    return parsed


def cyclonedx(path, text, document):
    spec = document.get("specVersion", "")
    validator = JsonStrictValidator(SchemaVersion.from_version(spec))
    error = validator.validate_str(text)
    errors = [] if error is None else [str(error)[:2000]]
    packages, purls, bad = [], [], []
    for component in document.get("components", []):
        if component.get("type") == "operating-system":
            continue
        purl = component.get("purl")
        arch = None
        if purl:
            purls.append(purl)
            parsed = check_purl(purl, bad)
            arch = parsed.qualifiers.get("arch") if parsed else None
        packages.append([component["name"], component.get("version"), arch])
    return {"format": "cyclonedx", "spec_version": spec, "errors": errors, "packages": packages,
            "purls": purls, "bad_purls": bad}


def spdx(path, document):
    errors = []
    try:
        parsed = parse_file(path)
        errors = [m.validation_message for m in validate_full_spdx_document(parsed)]
    except Exception as e:  # the parser's own errors list every problem it found
        errors = [str(e)[:2000]]
    packages, purls, bad = [], [], []
    for package in document.get("packages", []):
        spdx_id = package["SPDXID"]
        if spdx_id.startswith("SPDXRef-OperatingSystem") or spdx_id.startswith("SPDXRef-DocumentRoot"):
            continue
        arch = None
        for ref in package.get("externalRefs", []):
            if ref.get("referenceType") == "purl":
                purls.append(ref["referenceLocator"])
                parsed = check_purl(ref["referenceLocator"], bad)
                arch = parsed.qualifiers.get("arch") if parsed else None
        packages.append([package["name"], package.get("versionInfo"), arch])
    return {"format": "spdx", "spec_version": document.get("spdxVersion"), "errors": errors,
            "packages": packages, "purls": purls, "bad_purls": bad}


def main():
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        document = json.loads(text)
        if document.get("bomFormat") == "CycloneDX":
            result = cyclonedx(path, text, document)
        else:
            result = spdx(path, document)
        result["file"] = path
        print(json.dumps(result))


if __name__ == "__main__":
    main()
