"""The web UI in a real browser: Debian's headless Chromium driven by Playwright, against
``fsmount serve`` in a subprocess.

Nothing is skipped: without ``/usr/bin/chromium`` (``apt-get install chromium``; CI
installs it) or Playwright these tests fail.  Playwright's own browser download is never
used (``executable_path``).  Each test opens fresh browser contexts (no cookies, no
storage); the browser itself is started once per module to keep the run short.  The
accessibility check runs axe-core (shipped inside the ``axe-playwright-python`` package,
no network) on every page, plus checks of our own: each form control has a label, and
the main actions work from the keyboard (Tab order, Enter).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .harness import serve_subprocess

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Most a UI step may take (milliseconds); steps poll until then, never sleep.
STEP_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Server:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {self.token}"})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serve_subprocess(tmp_path / "store") as (url, token_file):
        yield Server(url, token_file.read_text().strip())


def new_page(browser: Browser) -> Page:
    context = browser.new_context()
    context.set_default_timeout(STEP_MS)
    page = context.new_page()
    page.on("dialog", lambda d: d.accept())  # the delete button's confirm()
    return page


def sign_in(page: Page, server: Server) -> None:
    page.goto(server.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Access token").fill(server.token)
    page.get_by_label("Access token").press("Enter")  # the keyboard signs in
    expect(page.get_by_role("heading", name="/")).to_be_visible()
    assert server.token not in page.content()
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["fsm_session"]
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"


def row(page: Page, name: str) -> Any:
    link = page.get_by_role("link", name=name, exact=True).or_(
        page.get_by_role("link", name=name + "/", exact=True))
    return page.locator("table.listing tbody tr").filter(has=link)


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 40), color).save(buf, format="PNG")
    return buf.getvalue()


def test_browse_upload_folder_rename_delete_search(browser: Browser, server: Server) -> None:
    page = new_page(browser)
    sign_in(page, server)
    text = b"first line\nsecond line\n" * 100  # 2300 bytes
    image = png((200, 40, 40))
    page.get_by_label("Files to upload").set_input_files([
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": text},
        {"name": "red.png", "mimeType": "image/png", "buffer": image},
    ])
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(row(page, "notes.txt")).to_be_visible()
    expect(row(page, "red.png")).to_be_visible()
    expect(row(page, "notes.txt")).to_contain_text("2.2 KiB")  # a human size
    # The thumbnail is a real decoded image.
    thumb = row(page, "red.png").locator("img.thumb")
    expect(thumb).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=thumb.element_handle())
    with server.api() as api:
        entries = {e["name"]: e for e in api.get("/api/v1/folders/root").json()["entries"]}
        assert api.get(f"/api/v1/files/{entries['notes.txt']['id']}/content").content == text
        assert hashlib.sha256(api.get(f"/api/v1/files/{entries['red.png']['id']}/content")
                              .content).digest() == hashlib.sha256(image).digest()
    # New folder, from the keyboard.
    page.get_by_label("New folder name").fill("Album")
    page.get_by_label("New folder name").press("Enter")
    expect(row(page, "Album")).to_be_visible()
    # Rename.
    r = row(page, "notes.txt")
    r.locator("summary").click()
    r.get_by_label("New name for notes.txt").fill("renamed.txt")
    r.get_by_label("New name for notes.txt").press("Enter")
    expect(row(page, "renamed.txt")).to_be_visible()
    expect(row(page, "notes.txt")).to_have_count(0)
    # Into the folder and back: the breadcrumb.
    page.get_by_role("link", name="Album/").click()
    expect(page.get_by_role("heading", name="/Album")).to_be_visible()
    page.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name="Files").click()
    # Delete.
    page.get_by_role("button", name="Delete red.png").click()
    expect(row(page, "red.png")).to_have_count(0)
    # Search.
    page.get_by_label("Search by name").fill("RENAMED")
    page.get_by_label("Search by name").press("Enter")
    expect(page.get_by_role("link", name="/renamed.txt")).to_be_visible()
    # A text file's page previews it.
    page.get_by_role("link", name="/renamed.txt").click()
    expect(page.locator("pre.text")).to_contain_text("second line")
    with server.api() as api:
        names = sorted(e["name"] for e in api.get("/api/v1/folders/root").json()["entries"])
    assert names == ["Album", "renamed.txt"]
    page.context.close()


def test_video_share_link_in_a_fresh_context_then_revoke(browser: Browser, server: Server,
                                                         tmp_path: Path) -> None:
    clip = tmp_path / "clip.webm"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=duration=1:size=64x64:rate=10", "-c:v", "libvpx", "-b:v", "100k",
                    str(clip)], check=True, timeout=60)
    page = new_page(browser)
    sign_in(page, server)
    page.get_by_label("Files to upload").set_input_files(str(clip))
    page.get_by_role("button", name="Upload", exact=True).click()
    page.get_by_role("link", name="clip.webm").click()
    # The owner's page plays it (the player's metadata arrives through Range requests).
    video = page.locator("video")
    page.wait_for_function("v => v.readyState >= 1 && v.duration > 0",
                           arg=video.element_handle())
    page.get_by_label("Link expires").select_option("1d")
    page.get_by_role("button", name="Create share link").click()
    link = page.get_by_label("Share link").input_value()
    assert link.startswith(server.url + "/s/")
    # A fresh context (no session) opens the link and plays the video.
    guest = new_page(browser)
    guest.goto(link)
    expect(guest.get_by_role("heading", name="clip.webm")).to_be_visible()
    guest.wait_for_function("v => v.readyState >= 1 && v.duration > 0",
                            arg=guest.locator("video").element_handle())
    # A password-protected link: the form, a wrong and the right password.
    page.get_by_label("Password (optional)").fill("open sesame")
    page.get_by_role("button", name="Create share link").click()
    expect(page.get_by_label("Share link")).not_to_have_value(link)
    locked = page.get_by_label("Share link").input_value()
    assert "sesame" not in locked
    guest.goto(locked)
    guest.get_by_label("Password").fill("wrong")
    guest.get_by_label("Password").press("Enter")
    expect(guest.get_by_role("alert")).to_contain_text("not right")
    guest.get_by_label("Password").fill("open sesame")
    guest.get_by_role("button", name="Open").click()
    expect(guest.get_by_role("heading", name="clip.webm")).to_be_visible()
    assert "sesame" not in guest.url
    # Revoke the first link on the share links page.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Share links").click()
    first_id = link.rsplit("/s/", 1)[1].split("_")[0]
    expect(page.locator("tbody tr")).to_have_count(2)
    page.locator(f'button[data-share-id="{first_id}"]').click()
    expect(page.locator(f'button[data-share-id="{first_id}"]')).to_have_count(0)
    response = guest.goto(link)
    assert response is not None and response.status == 410
    expect(guest.get_by_role("heading")).to_contain_text("no longer available")
    page.context.close()
    guest.context.close()


LABEL_CHECK = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    const labelled = (el.id && document.querySelector(`label[for="${el.id}"]`))
      || el.closest('label') || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby');
    if (!labelled) bad.push(el.outerHTML);
  }
  for (const b of document.querySelectorAll('button')) {
    if (!(b.textContent.trim() || b.getAttribute('aria-label'))) bad.push(b.outerHTML);
  }
  return bad;
}"""


def check_page(page: Page) -> None:
    assert page.evaluate(LABEL_CHECK) == []
    result = Axe().run(page)
    serious = [v for v in result.response["violations"]
               if v["impact"] in ("serious", "critical")]
    assert serious == [], [(v["id"], v["help"], [n["html"] for n in v["nodes"]][:3])
                           for v in serious]


def test_accessibility_labels_axe_and_keyboard(browser: Browser, server: Server) -> None:
    with server.api() as api:
        api.post("/api/v1/files", files={"file": ("a.txt", b"text")})
        api.post("/api/v1/files", files={"file": ("b.png", png((0, 90, 200)))})
        link = api.post("/api/v1/shares", json={"path": "/a.txt", "password": "pw"}).json()
    page = new_page(browser)
    page.goto(server.url + "/login")
    check_page(page)
    sign_in(page, server)
    check_page(page)  # a folder
    page.goto(server.url + "/v/a.txt")
    check_page(page)  # a file with the share form
    page.goto(server.url + "/shares")
    check_page(page)
    page.goto(server.url + "/search?q=a")
    check_page(page)
    page.goto(link["url"])
    check_page(page)  # the password form of a share link
    # Keyboard: from the top of a folder page, Tab reaches the main actions in order.
    page.goto(server.url + "/")
    order = []
    for _ in range(40):  # bounded: the page has fewer stops than this
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => { const e = document.activeElement;"
            " return (e.id || e.getAttribute('aria-label') || e.textContent || '').trim() }")
        order.append(focused)
        if focused == "Delete b.png":
            break
    wanted = ["Files", "Share links", "Sign out", "search-q", "Search", "upload-files",
              "Upload", "new-folder", "Create folder", "a.txt", "Rename", "Delete a.txt",
              "b.png", "Rename", "Delete b.png"]
    it = iter(order)
    assert all(any(w == got for got in it) for w in wanted), order
    # Enter on a focused control acts: make a folder with the keyboard only.
    page.focus("#new-folder")
    page.keyboard.type("kbd")
    page.keyboard.press("Enter")
    expect(row(page, "kbd")).to_be_visible()
    # Enter on a link in the listing opens it.
    row(page, "a.txt").get_by_role("link").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="a.txt")).to_be_visible()
    page.context.close()
