"""The forms of a site's setup pages: its source, its field mapping and its reconciliation policy.

Each form turns its fields into the JSON a SyncSource stores (sync/sources/README.md) and checks it with
sync.source_setup, the same checks the addsource command makes, putting each complaint on the field it is
about. Nothing here stores anything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from django import forms
from django.conf import settings

from .choices import DiscrepancyKind, RemovedPolicy, SourceKind
from .mapping import (
    MATCH_KEYS,
    MOODLE_FIELDS,
    REQUIRED_FIELDS,
    TRANSFORMS,
    UPDATE_POLICIES,
    MappingConfigError,
)
from .models import MoodleSite, SyncSource, default_role_ids
from .source_setup import (
    TABLE_OR_QUERY,
    SetupError,
    check_mapping,
    check_secret_name,
    is_kept_upload,
    missing_keys,
    read_first,
)
from .uploads import check_csv_upload

CSV_PATH, CSV_UPLOAD = "path", "upload"
PAGING_TYPES = [
    ("none", "One request: the API returns everyone at once"),
    ("next_link", "Follow a “next” link in each page"),
    ("link_header", 'Follow the Link: rel="next" header'),
    ("page", "Numbered pages (?page=1, 2, …)"),
]
# Where on the form each source config key is typed: a complaint about a key goes next to its field.
KEY_FIELDS = {
    "path": "path", "file": "upload", "id_column": "id_column", "id_field": "id_column",
    "delimiter": "delimiter", "encoding": "encoding", "url": "url", "records_path": "records_path",
    "paging": "paging_type", "next_path": "next_path", "auth_secret": "auth_secret",
    "auth_header": "auth_header", "auth_prefix": "auth_prefix", "timeout_s": "timeout_s",
    "retries": "retries", "dsn_secret": "dsn_secret", "table": "table", "schema": "schema", "query": "query",
}  # fmt: skip
# The config keys each kind's part of the form manages; any other key in a stored config (headers, params,
# a page size) is kept as it is.
FORM_KEYS = {
    SourceKind.CSV: ("path", "id_column", "delimiter", "encoding"),
    SourceKind.HTTP: (
        "url", "records_path", "id_field", "paging", "auth_secret", "auth_header", "auth_prefix", "timeout_s",
        "retries",
    ),
    SourceKind.SQL: ("dsn_secret", "table", "schema", "query", "id_column"),
}  # fmt: skip
_WHERE_READ = {SourceKind.CSV: "path", SourceKind.HTTP: "url", SourceKind.SQL: "dsn_secret"}


def _text(label: str, help_text: str = "", **kwargs) -> forms.CharField:
    return forms.CharField(label=label, required=False, help_text=help_text, **kwargs)


class SourceForm(forms.Form):
    """Where a site's people come from. A CSV file is a path on the hub's server or a file uploaded here
    (kept by the hub); an HTTP or SQL source names the environment variable holding its secret."""

    kind = forms.ChoiceField(
        choices=SourceKind.choices, initial=SourceKind.CSV, widget=forms.RadioSelect, label="Kind of source"
    )
    removed_policy = forms.ChoiceField(
        choices=RemovedPolicy.choices,
        initial=RemovedPolicy.KEEP,
        label="People who leave the source",
        help_text="Suspensions always pass the blast-radius guard first (the site's policy).",
    )
    # CSV
    csv_origin = forms.ChoiceField(
        choices=[(CSV_PATH, "A file on the hub's server"), (CSV_UPLOAD, "Upload a file (the hub keeps it)")],
        initial=CSV_PATH,
        widget=forms.RadioSelect,
        required=False,
        label="CSV file",
    )
    path = _text(
        "Path on the server",
        "Absolute path the workers read, in a folder of SOURCE_FILE_DIRS, e.g. /srv/hub/people.csv.",
    )
    upload = forms.FileField(required=False, label="Upload a CSV file")
    delimiter = _text("Delimiter", "One character; empty to detect , ; tab or | from the file.", max_length=1)
    encoding = _text("Encoding", "utf-8 (default) or a single-byte encoding such as cp1252.", max_length=40)
    # HTTP
    url = _text("URL of the first page", "https://… (no password in it: use the secret below).")
    records_path = _text(
        "Records path",
        "Dotted path to the list of people in each page (default data; empty: the page is it).",
    )
    paging_type = forms.ChoiceField(choices=PAGING_TYPES, initial="none", required=False, label="Paging")
    next_path = _text("Next-link path", "For “next” links: the dotted path of the link, e.g. links.next.")
    auth_secret = _text(
        "Secret (environment variable)",
        "The NAME of the environment variable holding the token, e.g. HR_API_TOKEN — never the token.",
    )
    auth_header = _text("Auth header", "Header the secret is sent in (default Authorization).")
    auth_prefix = _text("Auth prefix", "Put before the secret, e.g. “Bearer ”.", strip=False)
    timeout_s = forms.FloatField(required=False, min_value=1, max_value=300, label="Timeout per request (s)")
    retries = forms.IntegerField(required=False, min_value=0, max_value=10, label="Retries")
    # SQL
    dsn_secret = _text(
        "DSN secret (environment variable)",
        "The NAME of the environment variable holding the SQLAlchemy URL, e.g. HR_DB_DSN — never the URL "
        "or its password.",
    )
    table = _text("Table or view")
    schema = _text("Schema", "Empty: the connection's default.")
    query = _text(
        "Or a query",
        "A SELECT (or WITH … SELECT) instead of a table.",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    # CSV and SQL; the id field for HTTP
    id_column = _text(
        "External id column", "The column (HTTP: the field, default id) holding each person's external id."
    )

    def __init__(self, *args, site: MoodleSite, source: SyncSource | None = None, **kwargs) -> None:
        self.site = site
        self.source = source
        self.config: dict = {}
        self.first_records: list = []
        if source is not None and "initial" not in kwargs:
            kwargs["initial"] = self._initial(source)
        super().__init__(*args, **kwargs)
        self.fields["upload"].help_text = (
            f"At most {settings.UPLOAD_MAX_MB} MB, UTF-8 with a header row. The hub keeps it until another "
            "file replaces it; every run reads it."
        )
        if source is not None and is_kept_upload(site, source.config.get("path", "")):
            self.fields[
                "upload"
            ].help_text += f" Now: {Path(source.config['path']).name}; leave empty to keep it."

    @staticmethod
    def _initial(source: SyncSource) -> dict:
        config = source.config
        initial = {key: config.get(key, "") for key in KEY_FIELDS if isinstance(config.get(key), str)}
        initial.update(kind=source.kind, removed_policy=source.removed_policy)
        if source.kind == SourceKind.HTTP:
            initial["id_column"] = config.get("id_field", "")
            paging = config.get("paging") or {}
            initial["paging_type"] = paging.get("type", "none")
            initial["next_path"] = paging.get("next_path", "")
            initial["timeout_s"] = config.get("timeout_s")
            initial["retries"] = config.get("retries")
        if source.kind == SourceKind.CSV and is_kept_upload(source.site, config.get("path", "")):
            initial["csv_origin"] = CSV_UPLOAD
            initial["path"] = ""
        return initial

    def kept_keys(self) -> list[str]:
        """Keys of the stored config this form does not show, kept as they are."""
        if self.source is None:
            return []
        managed = set(FORM_KEYS.get(self.source.kind, ())) | {"kind"}
        return sorted(set(self.source.config) - managed)

    def clean_upload(self):
        upload = self.cleaned_data.get("upload")
        if upload:
            check_csv_upload(upload, "Put a larger file on the server and give its path.")
        return upload

    def clean_url(self) -> str:
        url = self.cleaned_data["url"].strip()
        if url and re.match(r"^[a-z][a-z0-9+.-]*://[^/@]*:[^/@]*@", url, re.I):
            raise forms.ValidationError(
                "Take the password out of the URL: put the secret in an environment variable and name it "
                "under “Secret”."
            )
        return url

    def clean(self) -> dict:
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if not kind or self.errors:
            return cleaned
        config = self._config(kind, cleaned)
        upload = cleaned.get("upload") if kind == SourceKind.CSV else None
        if kind == SourceKind.CSV and cleaned.get("csv_origin") == CSV_UPLOAD:
            if upload is None and not (
                self.source and is_kept_upload(self.site, self.source.config.get("path", ""))
            ):
                self.add_error("upload", "Choose the CSV file to upload.")
                return cleaned
            if upload is None:
                config["path"] = self.source.config["path"]
        elif upload is not None:
            self.add_error("upload", "To use this file, choose “Upload a file” above.")
            return cleaned
        elif kind == SourceKind.CSV and config.get("path"):
            stored = self.source.config.get("path") if self.source is not None else None
            if config["path"] != stored and not path_allowed(config["path"]):
                folders = ", ".join(str(folder) for folder in settings.SOURCE_FILE_DIRS)
                self.add_error(
                    "path",
                    f"Only files in {folders} can be chosen here (SOURCE_FILE_DIRS): the preview shows a "
                    "file's first rows, so a page must not open any file the hub can read. Put the export "
                    "there, or upload it.",
                )
                return cleaned
        for secret in ("auth_secret", "dsn_secret"):
            if config.get(secret):
                try:
                    check_secret_name(config[secret])
                except SetupError as exc:
                    self.add_error(KEY_FIELDS[secret], str(exc))
        checked = {**config, "path": "(upload)"} if upload is not None else config
        for key in missing_keys(kind, checked):
            if key == TABLE_OR_QUERY:
                self.add_error("table", "Give a table (or view), or a query.")
            else:
                self.add_error(KEY_FIELDS[key], "Required for this kind of source.")
        if self.errors:
            return cleaned
        try:
            self.first_records = read_first(kind, config, 20, file=upload)
        except SetupError as exc:
            self.add_error(KEY_FIELDS.get(exc.key) or _WHERE_READ[kind], f"Not saved: {exc}.")
            return cleaned
        self.config = config
        return cleaned

    def _config(self, kind: str, cleaned: dict) -> dict:
        """The config to store: the stored one's other keys, with this form's fields over them."""
        keep = {}
        if self.source is not None and self.source.kind == kind:
            managed = set(FORM_KEYS[kind])
            keep = {k: v for k, v in self.source.config.items() if k not in managed and k != "kind"}
        typed: dict = {}
        if kind == SourceKind.CSV:
            if cleaned.get("csv_origin") != CSV_UPLOAD:
                typed["path"] = cleaned.get("path", "").strip()
            typed["id_column"] = cleaned.get("id_column", "").strip()
            if cleaned.get("delimiter"):
                typed["delimiter"] = cleaned["delimiter"] if cleaned["delimiter"] != "\\t" else "\t"
            if cleaned.get("encoding", "").strip():
                typed["encoding"] = cleaned["encoding"].strip()
        elif kind == SourceKind.HTTP:
            typed["url"] = cleaned.get("url", "")
            for key in ("records_path", "auth_secret", "auth_header", "auth_prefix"):
                if cleaned.get(key):
                    typed[key] = cleaned[key].strip() if key != "auth_prefix" else cleaned[key]
            if cleaned.get("id_column", "").strip():
                typed["id_field"] = cleaned["id_column"].strip()
            stored = self.source.config.get("paging") if self.source and self.source.kind == kind else None
            paging = dict(stored) if isinstance(stored, dict) else {}
            paging_type = cleaned.get("paging_type") or "none"
            if paging.get("type") != paging_type:
                paging = {"type": paging_type}
            if paging_type == "next_link" and cleaned.get("next_path"):
                paging["next_path"] = cleaned["next_path"].strip()
            if paging_type != "none":
                typed["paging"] = paging
            for key in ("timeout_s", "retries"):
                if cleaned.get(key) is not None:
                    value = cleaned[key]
                    typed[key] = int(value) if key == "retries" or float(value).is_integer() else value
        else:
            for key in ("dsn_secret", "table", "schema", "query", "id_column"):
                if cleaned.get(key, "").strip():
                    typed[key] = cleaned[key].strip()
        return {**keep, **typed}


class MappingForm(forms.Form):
    """The field mapping, one row per Moodle field: the column it comes from (picked from the source's own
    columns) or a fixed value, its transforms, its update policy and a default; plus the match key and the
    auth method, and a value map (`left=1; active=0`) for a column whose words are not Moodle's. Custom
    profile fields already in the stored mapping are kept as they are."""

    match_key = forms.ChoiceField(
        choices=[(key, key) for key in MATCH_KEYS],
        help_text="How an existing Moodle user is recognised: idnumber is the external id.",
    )
    auth = forms.CharField(
        max_length=20, initial="manual", help_text="Auth plugin for new users: manual, saml2, oauth2, ldap, …"
    )
    extended_username_chars = forms.BooleanField(
        required=False, label="The site allows extended characters in usernames"
    )
    create_suspended = forms.BooleanField(
        required=False, label="Create people the source already marks suspended (then suspend them)"
    )
    memberships = forms.CharField(
        required=False,
        label="Courses and cohorts (JSON)",
        widget=forms.Textarea(attrs={"rows": 8, "class": "code", "spellcheck": "false"}),
        help_text='Which columns put people in cohorts and courses, e.g. {"cohorts": [{"source": '
        '"department", "idnumber": "dept-{slug}", "name": "Department of {value}"}], "courses": [{"source": '
        '"courses", "separator": ";", "match": "shortname", "role": "student"}], "on_leave": "suspend"}. '
        'Leaving a course suspends the enrolment; with "on_leave": "unenrol" an admin is also asked to '
        'approve the unenrolment. Empty: the site syncs users only. README, "Courses and cohorts", has '
        "every key.",
    )

    def __init__(self, *args, site: MoodleSite, columns: list[str], **kwargs) -> None:
        self.site = site
        self.columns = columns
        stored = site.source.mapping if isinstance(site.source.mapping, dict) else {}
        self.stored = stored
        if "initial" not in kwargs:
            kwargs["initial"] = self._initial(stored, columns)
        super().__init__(*args, **kwargs)
        self.config: dict = {}
        stored_fields = stored.get("fields") or {}
        known = list(columns)
        for name in MOODLE_FIELDS:
            spec = stored_fields.get(name)
            current = spec if isinstance(spec, str) else (spec or {}).get("source", "")
            choices = [("", "— not mapped —" if name not in REQUIRED_FIELDS else "— choose a column —")]
            choices += [(c, c) for c in known]
            if current and current not in known:
                choices.append((current, f"{current} (not in the source's first records)"))
            self.fields[f"{name}__source"] = forms.ChoiceField(
                choices=choices, required=False, label=f"{name}: column"
            )
            self.fields[f"{name}__constant"] = forms.CharField(
                required=False, label=f"{name}: fixed value", max_length=255
            )
            self.fields[f"{name}__transforms"] = forms.MultipleChoiceField(
                choices=[(t, t.replace("_", " ")) for t in TRANSFORMS],
                required=False,
                widget=forms.CheckboxSelectMultiple,
                label=f"{name}: transforms",
            )
            self.fields[f"{name}__update"] = forms.ChoiceField(
                choices=[("always", "on every sync"), ("create", "on creation only")],
                initial="always",
                label=f"{name}: update",
            )
            self.fields[f"{name}__default"] = forms.CharField(
                required=False, label=f"{name}: default", max_length=255, strip=False
            )
            self.fields[f"{name}__values"] = forms.CharField(
                required=False,
                label=f"{name}: value map",
                max_length=2000,
                help_text="source value=value to send, separated by ; (e.g. left=1; active=0)",
            )

    @staticmethod
    def _initial(stored: dict, columns: list[str]) -> dict:
        initial: dict = {
            "match_key": stored.get("match_key", "idnumber"),
            "auth": stored.get("auth", "manual"),
            "extended_username_chars": stored.get("extended_username_chars", False),
            "create_suspended": stored.get("create_suspended", False),
            "memberships": json.dumps(stored["memberships"], indent=2, ensure_ascii=False)
            if stored.get("memberships")
            else "",
        }
        fields = stored.get("fields")
        if not isinstance(fields, dict) or not fields:
            fields = _guess(columns)
        for name, spec in fields.items():
            if isinstance(spec, str):
                spec = {"source": spec}
            if not isinstance(spec, dict):
                continue
            initial[f"{name}__source"] = spec.get("source", "")
            initial[f"{name}__constant"] = spec.get("constant", "")
            initial[f"{name}__transforms"] = list(spec.get("transforms", ["strip"]))
            initial[f"{name}__update"] = spec.get("update", "always")
            initial[f"{name}__default"] = spec.get("default", "")
            if isinstance(spec.get("values"), dict):
                initial[f"{name}__values"] = format_value_map(spec["values"])
        for name in MOODLE_FIELDS:
            initial.setdefault(f"{name}__transforms", ["strip"])
        return initial

    def rows(self) -> list[dict]:
        """The per-field rows the template lays out as a table."""
        rows = []
        for name in MOODLE_FIELDS:
            rows.append(
                {
                    "name": name,
                    "required": name in REQUIRED_FIELDS,
                    "source": self[f"{name}__source"],
                    "constant": self[f"{name}__constant"],
                    "transforms": self[f"{name}__transforms"],
                    "update": self[f"{name}__update"],
                    "default": self[f"{name}__default"],
                    "values": self[f"{name}__values"],
                }
            )
        return rows

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        fields: dict = {}
        stored_fields = self.stored.get("fields") or {}
        for name in MOODLE_FIELDS:
            source = cleaned.get(f"{name}__source") or ""
            constant = cleaned.get(f"{name}__constant") or ""
            if source and constant:
                self.add_error(f"{name}__constant", "Choose a column or a fixed value, not both.")
                continue
            if not source and not constant:
                if name in REQUIRED_FIELDS:
                    self.add_error(
                        f"{name}__source", f"Moodle needs {name} to create users: choose a column."
                    )
                continue
            chosen = cleaned.get(f"{name}__transforms") or []
            if len({"lowercase", "uppercase", "title"} & set(chosen)) > 1:
                self.add_error(f"{name}__transforms", "Choose at most one of lowercase, uppercase and title.")
                continue
            spec: dict = {"source": source} if source else {"constant": constant}
            old = stored_fields.get(name)
            old_transforms = (old or {}).get("transforms") if isinstance(old, dict) else None
            # Transforms apply in order: keep a stored order when the same ones are chosen.
            if old_transforms is not None and set(old_transforms) == set(chosen):
                spec["transforms"] = list(old_transforms)
            else:
                spec["transforms"] = [t for t in TRANSFORMS if t in chosen]
            if cleaned.get(f"{name}__update") in UPDATE_POLICIES and cleaned[f"{name}__update"] != "always":
                spec["update"] = cleaned[f"{name}__update"]
            if cleaned.get(f"{name}__default"):
                spec["default"] = cleaned[f"{name}__default"]
            if text := (cleaned.get(f"{name}__values") or "").strip():
                if not source:
                    self.add_error(
                        f"{name}__values", "A value map needs a column (a fixed value has one value)."
                    )
                    continue
                try:
                    spec["values"] = parse_value_map(text)
                except ValueError as exc:
                    self.add_error(f"{name}__values", str(exc))
                    continue
            fields[name] = spec
        config: dict = {
            "match_key": cleaned["match_key"],
            "auth": cleaned["auth"].strip(),
            "fields": fields,
        }
        for flag in ("extended_username_chars", "create_suspended"):
            if cleaned.get(flag):
                config[flag] = True
        if self.stored.get("customfields"):
            config["customfields"] = self.stored["customfields"]
        text = (cleaned.get("memberships") or "").strip()
        if text:
            try:
                config["memberships"] = json.loads(text)
            except json.JSONDecodeError as exc:
                self.add_error("memberships", f"This is not JSON ({exc.msg} at line {exc.lineno}).")
        self.config = config
        if self.errors:
            return cleaned
        try:
            check_mapping(config, self.site)
        except MappingConfigError as exc:
            self.add_error(_mapping_field(str(exc)), str(exc))
        return cleaned


class PolicyForm(forms.ModelForm):
    """What the nightly reconciliation may do alone, who approves the rest, and the blast-radius guard."""

    auto_apply_kinds = forms.MultipleChoiceField(
        choices=DiscrepancyKind.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Applied without approval",
        help_text="Fixes towards the source of these kinds apply in the reconciliation itself. Whatever is "
        "ticked, a fix that suspends, deletes or re-links someone waits for an Admin.",
    )

    class Meta:
        model = MoodleSite
        fields = ["auto_apply_kinds", "four_eyes", "rename_rule", "max_removal_percent", "max_removal_count"]
        labels = {
            "four_eyes": "Four-eyes rule",
            "rename_rule": "Alternative username rule",
            "max_removal_percent": "Blast-radius limit (% of the site's users)",
            "max_removal_count": "Blast-radius limit (users)",
        }

    role_table = forms.CharField(
        required=False,
        label="Roles for enrolments",
        help_text="Role shortname=Moodle role id, separated by ; (empty: Moodle's defaults, student=5; "
        "teacher=4; editingteacher=3). The ids are on Moodle's Site administration > Users > Define roles.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        roles = self.instance.role_ids or {}
        self.fields["role_table"].initial = "; ".join(f"{name}={role_id}" for name, role_id in roles.items())

    def clean_role_table(self) -> dict[str, int]:
        table: dict[str, int] = {}
        for part in (self.cleaned_data.get("role_table") or "").split(";"):
            if not part.strip():
                continue
            name, equals, number = part.partition("=")
            name, number = name.strip().lower(), number.strip()
            if not equals or not re.fullmatch(r"[a-z0-9_]+", name) or not number.isdigit() or int(number) < 1:
                raise forms.ValidationError(f"“{part.strip()}” is not shortname=id (like student=5).")
            table[name] = int(number)
        return table or default_role_ids()

    def save(self, commit: bool = True) -> MoodleSite:
        self.instance.role_ids = self.cleaned_data["role_table"]
        return super().save(commit)

    def clean_rename_rule(self) -> str:
        rule = self.cleaned_data["rename_rule"].strip()
        if "{n}" not in rule:
            raise forms.ValidationError("The rule needs {n}, so each try gives another username.")
        try:
            sample = rule.format(username="mgarcia", external_id="e1234", n=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise forms.ValidationError(
                f"Only {{username}}, {{external_id}} and {{n}} may appear in the rule ({exc})."
            ) from None
        if not re.fullmatch(r"[-.@_a-z0-9]+", sample.lower()):
            raise forms.ValidationError(
                f"The rule gives “{sample}”: a username may hold only a-z, 0-9 and _ - . @."
            )
        return rule

    def clean_max_removal_percent(self):
        value = self.cleaned_data["max_removal_percent"]
        if value is not None and not 0 <= value <= 100:
            raise forms.ValidationError("A share between 0 and 100 %.")
        return value


def path_allowed(path: str) -> bool:
    """Whether a server path typed on a page is inside one of SOURCE_FILE_DIRS (links and .. resolved)."""
    try:
        target = Path(path).resolve()
    except (OSError, RuntimeError):
        return False
    return any(target.is_relative_to(Path(folder).resolve()) for folder in settings.SOURCE_FILE_DIRS)


def format_value_map(values: dict) -> str:
    """A stored value map as the form shows it: `left=1; active=0` (the empty source value as `=1`)."""
    return "; ".join(f"{key}={_as_text(value)}" for key, value in values.items())


def _as_text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def parse_value_map(text: str) -> dict[str, str]:
    """`left=1; active=0; on leave=1` (or one entry per line) as a value map; the mapping's own check then
    refuses keys that differ only in case or spaces."""
    values: dict[str, str] = {}
    for entry in re.split(r"[;\n]", text):
        entry = entry.strip()
        if not entry:
            continue
        if "=" not in entry:
            raise ValueError(f"Write each entry as source value=value to send: {entry!r} has no '='.")
        key, value = (part.strip() for part in entry.split("=", 1))
        values[key] = value
    return values


def _mapping_field(message: str) -> str | None:
    """The form field a mapping complaint is about ("mapping: 'fields.email' ..." → email__source)."""
    found = re.search(r"'(fields\.)?([a-z_0-9]+)", message)
    if not found:
        return None
    name = found.group(2)
    if found.group(1) and name in MOODLE_FIELDS:
        return f"{name}__source"
    return name if name in ("match_key", "auth") else None


# Column names that usually feed a Moodle field, for a first mapping a person then corrects.
_GUESSES = {
    "username": ("username", "login", "user", "uid"),
    "email": ("email", "mail", "e_mail", "work_email"),
    "firstname": ("firstname", "first_name", "first", "given_name", "givenname"),
    "lastname": ("lastname", "last_name", "last", "surname", "family_name"),
    "department": ("department", "dept"),
    "city": ("city", "town"),
    "country": ("country", "country_code"),
    "lang": ("lang", "language"),
}


def _guess(columns: list[str]) -> dict:
    by_name = {re.sub(r"[^a-z0-9]", "_", c.lower()): c for c in columns}
    fields = {}
    for name, candidates in _GUESSES.items():
        column = next((by_name[c] for c in candidates if c in by_name), None)
        if column:
            transforms = ["strip", "lowercase"] if name in ("username",) else ["strip"]
            fields[name] = {"source": column, "transforms": transforms}
    return fields
