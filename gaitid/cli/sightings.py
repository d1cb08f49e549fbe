"""`gaitid sightings SUBJECT --state PATH`: where and when an enrolled subject appears in an archive
that `gaitid rescore` processed (service.rescore.sightings has the rule)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gaitid.cli.errors import reported_errors


def sightings(
    subject: Annotated[str, typer.Argument(help="the enrolled subject's id")],
    state: Annotated[Path, typer.Option(help="the re-scoring state file, or the folder holding it (`gaitid rescore --out`'s folder)")],
    camera: Annotated[list[str] | None, typer.Option(help="only this camera (repeatable)")] = None,
    since: Annotated[str | None, typer.Option(help="only tracks starting at or after this ISO 8601 time")] = None,
    until: Annotated[str | None, typer.Option(help="only tracks starting at or before this ISO 8601 time")] = None,
    threshold: Annotated[float | None, typer.Option(help="lowest similarity shown (default: the gallery's decision threshold)")] = None,
    limit: Annotated[int, typer.Option(help="the most similar tracks shown (then in time order)")] = 100,
    namespace: Annotated[str, typer.Option(help="gallery namespace the subject is enrolled in")] = "default",
    gallery_dir: Annotated[Path | None, typer.Option(help="default: $GAITID_DATA_DIR/gallery")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    thumbnails: Annotated[Path | None, typer.Option(help="write each sighting's thumbnail (JPEG of the person's crops) into this folder")] = None,
):
    """Where and when SUBJECT appears in a re-scored archive: the tracks most similar to their enrolled
    walks, in time order, with video, camera, time, frame range and similarity.

    Times come from the video's path, else its container's creation time, else its file time (see
    `time_source`); naive path times are compared as UTC.
    """
    from gaitid.contract import read_metadata
    from service.rescore.sightings import (
        ArchiveTracks,
        SightingFilter,
        find_sightings,
        image_media_type,
        parse_cameras,
        sighting_record,
        subject_walks,
    )
    from service.rescore.sources import parse_time
    from service.rescore.store import RescoreState, find_state
    from service.settings import get_settings

    settings = get_settings()
    with reported_errors(exit_code=2):
        where = SightingFilter(cameras=parse_cameras(camera), since=since and parse_time(since),
                               until=until and parse_time(until))
        if threshold is None:
            model = settings.pipeline.embedding_path
            threshold, source = settings.gallery.decision_threshold(
                lambda: read_metadata(model) if model.is_file() else None)
            typer.echo(f"threshold {threshold:.4f} ({source})", err=True)
        state_file = find_state(state)
        with settings.gallery.open_gallery(gallery_dir, threshold=threshold) as gallery, \
                RescoreState(state_file) as archive_state:
            walks = subject_walks(gallery, subject, namespace=namespace)
            archive = ArchiveTracks.load(archive_state, walks.model_id)
            found = find_sightings(archive, walks, where, threshold=threshold, limit=limit)
            records = [sighting_record(s) for s in found]
            if thumbnails is not None:
                thumbnails.mkdir(parents=True, exist_ok=True)
                for number, (sighting, record) in enumerate(zip(found, records), 1):
                    image = archive_state.thumbnail(sighting.track.sha256, archive.model_id, sighting.track.track_id)
                    if image:
                        suffix = ".jpg" if image_media_type(image) == "image/jpeg" else ".png"
                        path = thumbnails / f"{number:04d}-{sighting.track.sha256[:12]}-{sighting.track.track_id}{suffix}"
                        path.write_bytes(image)
                        record["thumbnail"] = str(path)
    for record in records:
        typer.echo(json.dumps(record, ensure_ascii=False) if as_json else _line(record))
    typer.echo(f"{len(records)} sightings of {walks.subject_id} ({len(walks.sequence_ids)} enrolled walks) among "
               f"{len(archive.tracks)} archive tracks in {state_file}", err=True)


def _line(record: dict) -> str:
    when = record["start_time"] or "time unknown"
    return (f"{when:<29} {record['camera'] or '-':<12} {record['video']}  frames {record['first_frame']}-"
            f"{record['last_frame']}  similarity {record['similarity']:.4f}"
            + (f"  {record['thumbnail']}" if "thumbnail" in record else ""))


def register(app: typer.Typer) -> None:
    app.command()(sightings)
