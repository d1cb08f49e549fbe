"""Commands on who may do what to a gallery, and what was done: `gaitid keys` (make a key and its
keys-file entry, hash a key, list stored keys), `gaitid audit` (read a gallery's audit log),
`gaitid subjects` (stored subject ids that break the subject-id rule; erase one by its exact id, its
re-scoring results redacted first as the service does),
`gaitid check-gallery` (store, index and audit log agree).

The keys file's format and the roles are in service/auth.py; the audit log in gallery/audit.py; the
subject-id rule in gallery/subject_ids.py. Changes made here are audited as "cli:USER".
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer

from gaitid.cli.errors import reported_errors

keys_app = typer.Typer(help="API keys: make one (with its keys-file entry), hash one, list the stored ones.",
                       no_args_is_help=True)
subjects_app = typer.Typer(help="Stored subjects whose ids break the subject-id rule: list them, erase one.",
                           no_args_is_help=True)

GalleryDir = Annotated[Path | None, typer.Option(help="default: $GAITID_DATA_DIR/gallery")]


def _open_gallery(gallery_dir: Path | None):
    from service.settings import get_settings

    return get_settings().gallery.open_gallery(gallery_dir)


def _cli_actor():
    from gallery import AuditContext

    return AuditContext(f"cli:{getpass.getuser()}")


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Option(help="the key's name, shown in the audit log (e.g. front-desk-2026)")],
    gallery: Annotated[str, typer.Option(help="the gallery it opens (1-64 chars of [a-z0-9_.-])")],
    role: Annotated[str, typer.Option(help="read | enroll | admin")] = "read",
    append_to: Annotated[Path | None, typer.Option(help="append the entry to this keys file")] = None,
):
    """Make a random key: prints the secret (give it to the client; it is not stored) and its keys-file
    entry (only the sha256)."""
    import secrets

    from gallery import ApiKeyRecord, hash_secret
    from gallery.api_keys import check_record

    secret = secrets.token_urlsafe(32)
    with reported_errors(exit_code=2):
        record = check_record(ApiKeyRecord(name, gallery, role, hash_secret(secret), "file"))  # type: ignore[arg-type]
    entry = (f'[[keys]]\nname = "{record.name}"\ngallery = "{record.namespace}"\nrole = "{record.role}"\n'
             f'sha256 = "{record.key_sha256}"\n')
    if append_to is not None:
        existing = append_to.read_text(encoding="utf-8") if append_to.exists() else ""
        append_to.write_text(existing + ("\n" if existing and not existing.endswith("\n\n") else "") + entry,
                             encoding="utf-8")
        typer.echo(f"appended to {append_to}; restart the service to use it", err=True)
    else:
        typer.echo(entry)
    typer.echo(f"secret (X-API-Key), shown once: {secret}", err=True)


@keys_app.command("hash")
def keys_hash(secret: Annotated[str, typer.Argument(help="an API key")]):
    """The key's sha256 (for a keys-file entry), and the gallery GAITID_API_KEYS gave it: name that gallery
    in a keys-file entry to keep its data when moving to the keys file."""
    from gallery import hash_secret
    from service.auth import namespace_for_key

    typer.echo(f"sha256 = \"{hash_secret(secret)}\"")
    typer.echo(f"gallery under GAITID_API_KEYS = \"{namespace_for_key(secret.encode())}\"")


@keys_app.command("list")
def keys_list(gallery: Annotated[str | None, typer.Option(help="only this gallery's keys")] = None,
              gallery_dir: GalleryDir = None):
    """Keys stored in the gallery database (operator keys as of the last start, and keys made over HTTP)."""
    with reported_errors(exit_code=2), _open_gallery(gallery_dir) as store:
        for record in store.api_keys(gallery):
            typer.echo(f"{record.name}\t{record.namespace}\t{record.role}\t{record.source}")


def audit(
    gallery: Annotated[str, typer.Option(help="the gallery (namespace)")] = "default",
    action: Annotated[str | None, typer.Option(help="e.g. subject.deleted")] = None,
    subject: Annotated[str | None, typer.Option(help="one subject id")] = None,
    actor: Annotated[str | None, typer.Option(help="an API key's name")] = None,
    offset: int = 0,
    limit: int = 100,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    gallery_dir: GalleryDir = None,
):
    """A gallery's audit log, oldest first: who (key name), when, what, under which request id."""
    with reported_errors(exit_code=2), _open_gallery(gallery_dir) as store:
        entries, total = store.audit_log(namespace=gallery, action=action, subject_id=subject, actor=actor,
                                         offset=offset, limit=limit)
    for entry in entries:
        if as_json:
            typer.echo(json.dumps({"entry_id": entry.entry_id, "at": entry.at.isoformat(), "actor": entry.actor,
                                   "action": entry.action, "subject_id": entry.subject_id,
                                   "request_id": entry.request_id, "details": entry.details}, ensure_ascii=False))
        else:
            typer.echo(f"{entry.entry_id}\t{entry.at.isoformat(timespec='seconds')}\t{entry.actor}\t{entry.action}\t"
                       f"{entry.subject_id!r}\t{entry.request_id or '-'}\t{json.dumps(entry.details)}")
    typer.echo(f"{len(entries)} of {total} entries", err=True)


@subjects_app.command("list-invalid")
def subjects_list_invalid(gallery: Annotated[str | None, typer.Option(help="only this gallery")] = None,
                          gallery_dir: GalleryDir = None):
    """Stored subject ids that break today's subject-id rule (written by older versions), and why."""
    with reported_errors(exit_code=2), _open_gallery(gallery_dir) as store:
        problems = store.subject_id_problems(gallery)
    for problem in problems:
        typer.echo(f"{problem.namespace}\t{problem.subject_id!r}\t{problem.problem}")
    typer.echo(f"{len(problems)} subject ids break the rule", err=True)


@subjects_app.command("delete")
def subjects_delete(
    subject_id: Annotated[str, typer.Argument(help="the stored id, exactly (Python escapes such as \\x00 are "
                                                   "decoded with --escaped)")],
    gallery: Annotated[str, typer.Option(help="the gallery (namespace)")] = "default",
    escaped: Annotated[bool, typer.Option(help="decode backslash escapes in SUBJECT_ID")] = False,
    gallery_dir: GalleryDir = None,
):
    """Erase one subject (sequences, embeddings, index vectors), whatever its id; audited as cli:USER.
    With GAITID_RESCORE_STATE set, its re-scoring results are redacted first, as the service does."""
    from service.rescore import redact_subject
    from service.settings import get_settings

    if escaped:
        subject_id = subject_id.encode("latin-1", "backslashreplace").decode("unicode_escape")
    rescore_state = get_settings().gallery.rescore_state
    with reported_errors(exit_code=2), _open_gallery(gallery_dir) as store:
        # An unknown id is refused before anything is rewritten.
        stored_id = store.get_subject(subject_id, namespace=gallery).subject_id
        redaction = None if rescore_state is None else redact_subject(rescore_state, stored_id, namespace=gallery)
        erased = store.delete_subject(subject_id, namespace=gallery, audit_context=_cli_actor(),
                                      audit_details=None if redaction is None else redaction.audit_details())
    typer.echo(f"erased {subject_id!r}: {erased} sequences"
               + ("" if redaction is None else f"; re-scoring results: {redaction.line()}"))


def check_gallery(gallery: Annotated[str | None, typer.Option(help="only this gallery")] = None,
                  gallery_dir: GalleryDir = None):
    """Check that store, index and audit log agree (gallery/consistency.py); exit status 1 on any problem.
    Run it on a stopped service, or on one that is not writing."""
    with reported_errors(exit_code=2), _open_gallery(gallery_dir) as store:
        problems = store.check(gallery)
    for problem in problems:
        typer.echo(problem)
    typer.echo(f"{len(problems)} problems", err=True)
    if problems:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(subjects_app, name="subjects")
    app.command()(audit)
    app.command("check-gallery")(check_gallery)
