"""The web page (/ui/) in headless Chromium against the real service: enroll from real clips (one
walker; two walkers, choosing one by their thumbnails), identify another clip of the same person and
see their name, see where a re-scored archive saw them, delete a subject after confirming; the API key
prompt; errors shown from the ErrorBody.
Screenshots at a laptop's and a phone's size (GAITID_UI_SCREENSHOTS keeps them)."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect
from typer.testing import CliRunner

from gaitid.cli import app as cli_app
from service.settings import get_settings
from tests.service.conftest import walking_clip
from tests.ui.conftest import LAPTOP, PHONE

# Records the forms the page sends (Playwright does not show a multipart body that holds a file).
RECORD_FORMS = """() => {
  const send = window.fetch;
  window.sentForms = [];
  window.fetch = (url, options) => {
    if (options && options.body instanceof FormData) {
      const fields = [...options.body.entries()].map(([k, v]) => [k, typeof v === "string" ? v : `file ${v.name}`]);
      window.sentForms.push([url, fields]);
    }
    return send(url, options);
  };
}"""
PROCESSING_MS = 90_000  # a clip on a loaded 2-core CI machine; a few seconds when idle


def enroll(page: Page, subject_id: str, display_name: str, clip) -> None:
    page.click("nav a[data-view=enroll]")
    form = page.locator("#enroll-form")
    form.locator("[name=subject_id]").fill(subject_id)
    form.locator("[name=display_name]").fill(display_name)
    form.locator("[name=video]").set_input_files(clip)
    form.locator("button[type=submit]").click()


def rescore_archive(tmp_path, monkeypatch, clips: dict[str, object]):
    """`gaitid rescore` over an archive of the given clips (path in the archive -> clip); its results folder."""
    archive = tmp_path / "archive"
    for name, clip in clips.items():
        (archive / name).parent.mkdir(parents=True, exist_ok=True)
        (archive / name).symlink_to(clip)
    for key, value in {"DATA_DIR": tmp_path / "data", "SEGMENTER": "bgsub", "PROVIDERS": "cpu"}.items():
        monkeypatch.setenv(f"GAITID_{key}", str(value))
    get_settings.cache_clear()
    try:
        results = tmp_path / "job" / "results.jsonl"
        done = CliRunner().invoke(cli_app, ["rescore", str(archive), "--out", str(results), "--no-progress",
                                            "--workers", "1"])
        assert done.exit_code == 0, done.output
    finally:
        get_settings.cache_clear()
    return results.parent


@pytest.mark.data
@pytest.mark.slow
def test_enroll_identify_and_delete_in_the_browser(browser, service, videos_dir, screenshots, tmp_path, monkeypatch):
    phone = videos_dir / "phone"  # person A walks in demo1 and demo2; persons B and C together in demo4
    job = rescore_archive(tmp_path, monkeypatch, {"camA/2024-01-02/10-00-00.mp4": phone / "demo2.mp4",
                                                  "camB/2024-01-03/09-30-00.mp4": phone / "demo4.mp4"})
    with service(rescore_state=job) as base:
        page = browser.new_page(viewport=LAPTOP)
        page.goto(f"{base}/ui/")
        expect(page.locator("#gallery-status")).to_contain_text("gallery default · admin · 0 subjects")

        enroll(page, "person-a", "Person A", phone / "demo1.mp4")
        expect(page.locator("#enroll-result .notice")).to_contain_text(
            "Enrolled Person A (person-a)", timeout=PROCESSING_MS)

        # Two people: the page shows each track to choose from, and enrolls the chosen one.
        enroll(page, "person-b", "Person B", phone / "demo4.mp4")
        choices = page.locator("#enroll-result article.track")
        expect(choices).to_have_count(2, timeout=PROCESSING_MS)
        for choice in choices.all():  # each person's picture and how far the track can be trusted
            expect(choice.locator("img.thumb")).to_be_visible()
            assert choice.locator("img.thumb").evaluate("img => img.complete && img.naturalWidth > 0")
            expect(choice.locator(".quality")).to_contain_text("frames")
        page.screenshot(path=screenshots / "enroll-choose-laptop.png", full_page=True)
        chosen = choices.first.get_attribute("data-track-id")
        with page.expect_request(lambda r: r.url.endswith("/enroll") and r.method == "POST") as choice_request:
            choices.first.locator("button.pick").click()
        form = choice_request.value.post_data_buffer
        assert b'name="clip_id"' in form and b'name="video"' not in form  # the server's copy: no second upload
        expect(page.locator("#enroll-result .notice")).to_contain_text(
            f"Enrolled Person B (person-b): track {chosen}", timeout=PROCESSING_MS)

        page.click("nav a[data-view=identify]")
        page.locator("#identify-form [name=video]").set_input_files(phone / "demo2.mp4")
        page.locator("#identify-form button[type=submit]").click()
        track = page.locator("#identify-result article.track")
        expect(track).to_have_count(1, timeout=PROCESSING_MS)
        expect(track.locator(".decision")).to_have_attribute("data-decision", "known")
        expect(track.locator(".decision")).to_contain_text("Person A")
        expect(track.locator("tbody tr")).to_have_count(2)  # both enrolled subjects, best first
        expect(track.locator("tbody tr").first).to_contain_text("Person A")
        expect(track.locator(".decision")).to_contain_text("margin 0.")
        assert track.locator("img.thumb").evaluate("img => img.complete && img.naturalWidth > 0")
        expect(track.locator(".quality")).to_contain_text("frames")
        page.screenshot(path=screenshots / "identify-laptop.png", full_page=True)
        page.set_viewport_size(PHONE)
        page.screenshot(path=screenshots / "identify-phone.png", full_page=True)
        page.set_viewport_size(LAPTOP)

        page.click("nav a[data-view=subjects]")
        rows = page.locator("#subjects-list tbody tr")
        expect(rows).to_have_count(2)
        row = page.locator("#subjects-list tr[data-subject-id=person-a]")
        # Where the re-scored archive saw person A: camera A's clip, not camera B's (persons B and C).
        row.locator("button.sightings").click()
        sightings = page.locator("#sightings-list tbody tr")
        expect(sightings).to_have_count(1, timeout=PROCESSING_MS)
        expect(sightings.first).to_contain_text("camA")
        expect(sightings.first).to_contain_text("10-00-00.mp4")
        assert sightings.first.locator("img.thumb").evaluate("img => img.complete && img.naturalWidth > 0")
        expect(page.locator("#sightings-summary")).to_contain_text("1 sighting among 3 archive tracks")
        page.screenshot(path=screenshots / "sightings-laptop.png", full_page=True)
        row.locator("button.danger").click()
        dialog = page.locator("#confirm-dialog")
        expect(dialog).to_contain_text("Person A (person-a) and 1 enrolled walk")
        dialog.locator("button[value=cancel]").click()  # cancelling keeps the subject
        expect(dialog).to_be_hidden()
        assert httpx.get(f"{base}/subjects/person-a").status_code == 200
        expect(rows).to_have_count(2)
        row.locator("button.danger").click()
        page.screenshot(path=screenshots / "delete-confirm-phone.png")
        dialog.locator("#confirm-ok").click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-subject-id", "person-b")
        expect(page.locator("#sightings")).to_be_hidden()  # the deleted subject's sightings went with it
        page.set_viewport_size(PHONE)
        page.screenshot(path=screenshots / "subjects-phone.png", full_page=True)

        # The re-scoring report (`gaitid rescore-report`) opened from the operator's disk.
        report = job / "report.html"
        made = CliRunner().invoke(cli_app, ["rescore-report", str(job / "results.jsonl"), "--out", str(report)])
        assert made.exit_code == 0, made.output
        page.click("nav a[data-view=report]")
        page.locator("#report-file").set_input_files(report)
        shown = page.frame_locator("#report-frame")
        expect(shown.locator("h1")).to_have_text("Re-scoring report")
        expect(shown.locator("body")).to_contain_text("2 videos, 3 tracks")
        page.screenshot(path=screenshots / "report-phone.png", full_page=True)

        left = httpx.get(f"{base}/subjects").json()
        assert [s["subject_id"] for s in left["subjects"]] == ["person-b"]


def test_api_key_prompt_and_error_answers(browser, service, tmp_path):
    key = "ui-test-key-0123456789"
    with service(api_keys=key) as base:
        page = browser.new_page(viewport=PHONE)
        page.goto(f"{base}/ui/")
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()  # the server answered 401: the page asks for the key
        expect(page.locator("#gallery-status")).to_have_text("API key needed")
        dialog.locator("[name=key]").fill(key)
        dialog.locator("button[value=save]").click()
        expect(page.locator("#gallery-status")).to_contain_text("· admin · 0 subjects")
        assert page.evaluate("sessionStorage.getItem('gaitid.apiKey')") == key

        # A camera made over the API is offered in the forms; its id and the rotation go with the clip.
        made = httpx.put(f"{base}/cameras/hall-2", json={"rotation": 90}, headers={"X-API-Key": key})
        assert made.status_code == 201, made.text
        page.reload()
        form = page.locator("#identify-form")
        expect(form.locator(".camera-field")).to_be_visible()
        form.locator("[name=camera_id]").select_option("hall-2")
        form.locator("[name=rotation]").select_option("180")
        not_a_video = tmp_path / "notes.mp4"
        not_a_video.write_text("this is a text file, not a video\n" * 20)
        form.locator("[name=video]").set_input_files(not_a_video)
        page.evaluate(RECORD_FORMS)
        form.locator("button[type=submit]").click()
        error = page.locator("#view-identify .error")
        expect(error).to_be_visible(timeout=PROCESSING_MS)
        expect(error.locator(".code")).to_have_text("invalid_video")
        expect(page.locator("#identify-result")).to_be_empty()
        assert page.evaluate("window.sentForms") == [
            ["/identify", [["camera_id", "hall-2"], ["rotation", "180"], ["video", "file notes.mp4"]]]]

        # A thumbnail the server no longer keeps: its place says why, in the server's words.
        gone = "/clips/" + "0" * 64 + "/tracks/1/thumbnail.png"
        expired = httpx.get(base + gone, headers={"X-API-Key": key})
        assert expired.status_code == 404
        shown = page.evaluate("async url => (await thumbnail(url, 'a walker')).textContent", gone)
        assert shown == expired.json()["message"]

        page.click("nav a[data-view=subjects]")
        expect(page.locator("#subjects-list")).to_contain_text("Nobody is enrolled yet")
        page.click("nav a[data-view=report]")
        page.locator("#report-file").set_input_files(not_a_video)
        expect(page.locator("#view-report .error")).to_contain_text("notes.mp4 is not an HTML report")
        expect(page.locator("#report-frame")).to_be_hidden()
        page.click("#key-button")
        dialog.locator("#key-forget").click()
        expect(page.locator("#gallery-status")).to_have_text("API key needed")


def test_cameras_are_made_changed_and_deleted_in_the_page(browser, service, tmp_path, screenshots):
    empty_scene = tmp_path / "empty.avi"
    empty_scene.write_bytes(walking_clip(people=0, frames=10))
    with service() as base:
        page = browser.new_page(viewport=LAPTOP)
        page.goto(f"{base}/ui/#cameras")
        expect(page.locator("#cameras-list")).to_contain_text("No cameras yet")
        form = page.locator("#camera-form")
        form.locator("[name=camera_id]").fill("lobby-1")
        form.locator("[name=rotation]").select_option("270")
        for name, value in {"roi_x1": "0.1", "roi_y1": "0.2", "roi_x2": "0.9", "roi_y2": "1"}.items():
            form.locator(f"[name={name}]").fill(value)
        form.locator("[name=background]").set_input_files(empty_scene)
        form.locator("button[type=submit]").click()
        row = page.locator("#cameras-list tr[data-camera-id=lobby-1]")
        expect(row).to_contain_text("270°")
        expect(row).to_contain_text("10%–90% across, 20%–100% down")
        expect(row).to_contain_text("clip stored")
        stored = httpx.get(f"{base}/cameras/lobby-1").json()
        assert stored["rotation"] == 270 and stored["roi"] == [0.1, 0.2, 0.9, 1.0] and stored["background"]
        # The forms offer it.
        page.click("nav a[data-view=identify]")
        expect(page.locator("#identify-form [name=camera_id] option[value=lobby-1]")).to_have_count(1)

        # Editing keeps the empty-scene clip unless another is given.
        page.click("nav a[data-view=cameras]")
        row.locator("button", has_text="Edit").click()
        expect(form.locator("[name=rotation]")).to_have_value("270")
        form.locator("[name=rotation]").select_option("90")
        form.locator("button[type=submit]").click()
        expect(row).to_contain_text("90°")
        changed = httpx.get(f"{base}/cameras/lobby-1").json()
        assert changed["rotation"] == 90 and changed["background"] == stored["background"]

        form.locator("[name=camera_id]").fill("hall")
        form.locator("[name=roi_x1]").fill("0.5")  # half a region
        form.locator("button[type=submit]").click()
        expect(page.locator("#view-cameras .error")).to_contain_text("all four edges")
        assert httpx.get(f"{base}/cameras/hall").status_code == 404
        page.screenshot(path=screenshots / "cameras-laptop.png", full_page=True)

        row.locator("button.danger").click()
        page.locator("#confirm-dialog #confirm-ok").click()
        expect(page.locator("#cameras-list")).to_contain_text("No cameras yet")
        assert httpx.get(f"{base}/cameras").json()["cameras"] == []
