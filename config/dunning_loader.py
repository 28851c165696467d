"""Loads the dunning policies (config/dunning/<segment>.yaml) and notice templates
(config/dunning/templates/<name>.txt) at start, and refuses anything wrong with a message that names
the file, the level and the field. The rules themselves live in domain.dunning_policy; this module adds
what needs the file system: the file name is the segment, templates exist and use known placeholders.

Template format: an optional first line `Subject: <text>` (required for e-mail), a blank line, the
body. Placeholders are `{name}` with a name from domain.dunning_policy.TEMPLATE_PLACEHOLDERS; a literal
brace is written `{{` or `}}`."""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from domain.dunning_policy import TEMPLATE_PLACEHOLDERS, DunningPolicy

DEFAULT_DUNNING_DIR = Path(__file__).with_name("dunning")
DEFAULT_SEGMENT = "consumer-de"


class DunningConfigError(ValueError):
    """A dunning policy or template is invalid; the message names the file and where in it."""


@dataclass(frozen=True)
class NoticeTemplate:
    name: str
    path: Path
    subject: str | None
    body: str
    placeholders: frozenset[str]

    def render(self, values: dict[str, str]) -> tuple[str | None, str]:
        """(subject, body) with every placeholder filled; `values` must hold every allowed placeholder."""
        subject = self.subject.format_map(values) if self.subject is not None else None
        return subject, self.body.format_map(values)


@dataclass(frozen=True)
class DunningConfig:
    policies: dict[str, DunningPolicy]
    templates: dict[str, NoticeTemplate]
    default_segment: str = DEFAULT_SEGMENT
    directory: Path = field(default=DEFAULT_DUNNING_DIR)

    def policy(self, segment: str | None) -> DunningPolicy:
        name = segment or self.default_segment
        try:
            return self.policies[name]
        except KeyError:
            raise KeyError(f"no dunning policy for segment {name!r}; known: {sorted(self.policies)} ({self.directory})") from None

    def template(self, name: str) -> NoticeTemplate:
        return self.templates[name]


def load_dunning_config(directory: Path | None = None, *, default_segment: str = DEFAULT_SEGMENT) -> DunningConfig:
    """Every `<segment>.yaml` in `directory` and every template under `directory/templates`, checked
    together: a policy naming a template that does not exist, or a barring notice whose template does not
    say when the barring comes, is refused."""
    directory = Path(directory) if directory is not None else DEFAULT_DUNNING_DIR
    if not directory.is_dir():
        raise DunningConfigError(f"{directory}: dunning policy directory does not exist")
    templates = load_templates(directory / "templates")
    policies: dict[str, DunningPolicy] = {}
    for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
        policy = load_dunning_policy(path)
        _check_templates(path, policy, templates)
        policies[policy.segment] = policy
    if not policies:
        raise DunningConfigError(f"{directory}: no dunning policy files (<segment>.yaml)")
    if default_segment not in policies:
        raise DunningConfigError(f"{directory}: the default segment {default_segment!r} has no policy file ({default_segment}.yaml)")
    return DunningConfig(policies=policies, templates=templates, default_segment=default_segment, directory=directory)


def load_dunning_policy(path: Path) -> DunningPolicy:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DunningConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise DunningConfigError(f"{path}: expected a mapping with segment, description, customer_type, levels, ...")
    segment = document.get("segment", path.stem)
    if segment != path.stem:
        raise DunningConfigError(f"{path}: field 'segment' is {segment!r} but the file name says {path.stem!r}")
    data = {**document, "segment": segment}
    try:
        return DunningPolicy.model_validate(data)
    except ValidationError as exc:
        raise DunningConfigError(f"{path}: {describe(exc, data)}") from exc


def load_templates(directory: Path) -> dict[str, NoticeTemplate]:
    if not directory.is_dir():
        raise DunningConfigError(f"{directory}: notice template directory does not exist")
    return {path.stem: parse_template(path) for path in sorted(directory.glob("*.txt"))}


def parse_template(path: Path) -> NoticeTemplate:
    text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    subject: str | None = None
    body = text
    first, newline, rest = text.partition("\n")
    if first.lower().startswith("subject:"):
        subject = first.split(":", 1)[1].strip()
        if not subject:
            raise DunningConfigError(f"{path}: line 1: the Subject line is empty")
        body = rest[1:] if rest.startswith("\n") else rest
    if not body.strip():
        raise DunningConfigError(f"{path}: the template has no body")
    used: set[str] = set()
    for line_no, line in enumerate(text.split("\n"), start=1):
        used |= _placeholders(path, line_no, line)
    return NoticeTemplate(name=path.stem, path=path, subject=subject, body=body, placeholders=frozenset(used))


def _placeholders(path: Path, line_no: int, line: str) -> set[str]:
    found: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(line))
    except ValueError as exc:
        raise DunningConfigError(f"{path}: line {line_no}: {exc} (write a literal brace as '{{{{' or '}}}}')") from exc
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_PLACEHOLDERS:
            raise DunningConfigError(f"{path}: line {line_no}: unknown placeholder {{{name}}}; allowed: "
                                     f"{', '.join(sorted(TEMPLATE_PLACEHOLDERS))}")
        if spec or conversion:
            raise DunningConfigError(f"{path}: line {line_no}: placeholder {{{name}}} takes no format or conversion")
        found.add(name)
    return found


def _check_templates(path: Path, policy: DunningPolicy, templates: dict[str, NoticeTemplate]) -> None:
    for index, level in enumerate(policy.levels):
        for action_index, action in enumerate(level.actions):
            if action.type != "notice":
                continue
            where = f"{path}: level {index + 1} ({level.name!r}): field 'actions[{action_index}].template'"
            template = templates.get(action.template)
            if template is None:
                raise DunningConfigError(f"{where}: no template {action.template!r} (expected {path.parent / 'templates' / (action.template + '.txt')})")
            if action.channel == "email" and template.subject is None:
                raise DunningConfigError(f"{where}: template {template.path.name} is sent by e-mail and needs a 'Subject:' first line")
            if action.announces_barring and "barring_date" not in template.placeholders:
                raise DunningConfigError(f"{where}: template {template.path.name} announces a barring and must name its date ({{barring_date}})")


def describe(error: ValidationError, data: dict[str, Any]) -> str:
    """Pydantic's errors with their place said the way the file is written: level number and name, field path."""
    problems = []
    levels = data.get("levels") if isinstance(data.get("levels"), list) else []
    for item in error.errors():
        loc = list(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        prefix = ""
        if len(loc) >= 2 and loc[0] == "levels" and isinstance(loc[1], int):
            index = loc[1]
            raw = levels[index] if index < len(levels) else None
            name = raw.get("name") if isinstance(raw, dict) else None
            prefix = f"level {index + 1}" + (f" ({name!r})" if name else "") + ": "
            loc = loc[2:]
        # Discriminated unions add the action type to the path (actions.0.late_fee.amount): drop it.
        loc = [part for i, part in enumerate(loc) if not (i > 0 and isinstance(loc[i - 1], int) and part in _ACTION_TYPES)]
        path = _path(loc)
        problems.append(f"{prefix}field '{path}': {message}" if path else f"{prefix}{message}")
    return "; ".join(problems)


_ACTION_TYPES = frozenset({"notice", "late_fee", "retry_payment", "bar", "terminate", "collections", "write_off"})


def _path(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
