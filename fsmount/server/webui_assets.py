"""The web UI's one style sheet and one script, served at ``/ui/style.css`` and
``/ui/app.js`` (kept here as text so the package needs no data files and no build step).

The script is small vanilla JavaScript: it reads the session's CSRF token from the page's
``<meta name="csrf-token">`` and sends it as ``X-CSRF-Token`` with every API call that
changes something; uploads go through the resumable sessions (``POST /api/v1/uploads``,
``PUT .../chunks/N`` with ``XMLHttpRequest`` for upload progress, ``POST .../complete``),
one ``<progress>`` per file; the other forms call the REST API and reload the page.
"""

from __future__ import annotations

STYLE = """
:root { color-scheme: light dark; --accent: #2457c5; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; }
main { max-width: 64rem; margin: 0 auto; padding: 1rem; }
.top { display: flex; gap: 1rem; align-items: center; padding: .5rem 1rem;
       border-bottom: 1px solid #8884; }
.top .brand { font-weight: 700; text-decoration: none; }
.top nav { flex: 1; display: flex; gap: 1rem; }
.who { opacity: .8; }
.inline { display: inline; }
.crumbs { margin: .5rem 0; }
.tools form, form.search { margin: .5rem 0; display: flex; flex-wrap: wrap; gap: .4rem;
                           align-items: center; }
table.listing { border-collapse: collapse; width: 100%; }
table.listing th, table.listing td { text-align: left; padding: .3rem .5rem;
                                     border-bottom: 1px solid #8883; vertical-align: middle; }
td.n { text-align: right; white-space: nowrap; }
td.t { width: 52px; }
img.thumb { width: 48px; height: 48px; object-fit: cover; border-radius: 4px; }
.icon { display: inline-block; width: 48px; line-height: 48px; text-align: center;
        font-size: .7rem; text-transform: uppercase; border-radius: 4px; background: #8882; }
.icon.folder { background: #e8c15a66; }
.icon.video { background: #5a8ae866; }
.icon.audio { background: #5ae8a066; }
details.rename { display: inline-block; }
details.rename form { display: inline-flex; gap: .3rem; }
img.preview, video { max-width: 100%; max-height: 70vh; display: block; }
pre.text { max-height: 60vh; overflow: auto; padding: .5rem; border: 1px solid #8885; }
.error { color: #b00020; font-weight: 600; }
.meta, .empty { opacity: .8; }
.progress { list-style: none; padding: 0; }
.progress progress { width: 16rem; vertical-align: middle; }
a.button, button { padding: .3rem .7rem; border-radius: 4px; }
a.button { border: 1px solid var(--accent); text-decoration: none; display: inline-block; }
:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden;
           clip: rect(0 0 0 0); white-space: nowrap; }
input#share-url { width: 100%; max-width: 40rem; }
"""

SCRIPT = r"""
"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";
  const CHUNK = 4 * 1024 * 1024;

  function status(text, isError) {
    const el = document.getElementById("status");
    if (el) { el.textContent = text; el.className = isError ? "error" : ""; }
  }

  async function api(method, url, body) {
    const opts = { method: method, headers: { "X-CSRF-Token": csrf },
                   credentials: "same-origin" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(url, opts);
    if (!r.ok) {
      let msg = r.status + "";
      try { const j = await r.json(); msg = j.error_description || j.error || msg; }
      catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return r.status === 204 ? null : r.json();
  }

  function putChunk(url, blob, onProgress) {
    return new Promise(function (resolve, reject) {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", url);
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      xhr.upload.onprogress = function (e) { if (e.lengthComputable) onProgress(e.loaded); };
      xhr.onload = function () {
        if (xhr.status >= 200 && xhr.status < 300) resolve();
        else reject(new Error("chunk failed: " + xhr.status));
      };
      xhr.onerror = function () { reject(new Error("network error")); };
      xhr.send(blob);
    });
  }

  async function uploadOne(file, folder, list) {
    const li = document.createElement("li");
    const label = document.createElement("label");
    const bar = document.createElement("progress");
    const id = "up-" + Math.random().toString(36).slice(2);
    bar.id = id; bar.max = file.size || 1; bar.value = 0;
    label.htmlFor = id; label.textContent = file.name + " ";
    li.appendChild(label); li.appendChild(bar); list.appendChild(li);
    const s = await api("POST", "/api/v1/uploads",
      { file_name: file.name, file_size: file.size, chunk_size: CHUNK, folder_id: folder });
    for (let n = 0; n < s.total_chunks; n++) {
      const start = n * CHUNK;
      await putChunk("/api/v1/uploads/" + s.id + "/chunks/" + n,
        file.slice(start, Math.min(file.size, start + CHUNK)),
        function (loaded) { bar.value = start + loaded; });
      bar.value = Math.min(file.size, start + CHUNK);
    }
    await api("POST", "/api/v1/uploads/" + s.id + "/complete");
    bar.value = bar.max;
    li.dataset.done = "1";
  }

  const up = document.getElementById("upload-form");
  if (up) up.addEventListener("submit", async function (e) {
    e.preventDefault();
    const files = Array.from(document.getElementById("upload-files").files);
    const list = document.getElementById("upload-progress");
    status("Uploading " + files.length + " file(s)…");
    try {
      for (const f of files) await uploadOne(f, up.dataset.folder, list);
      status("Uploaded " + files.length + " file(s).");
      location.reload();
    } catch (err) { status("Upload failed: " + err.message, true); }
  });

  const mk = document.getElementById("mkdir-form");
  if (mk) mk.addEventListener("submit", async function (e) {
    e.preventDefault();
    try {
      await api("POST", "/api/v1/folders",
        { name: mk.elements.name.value, parent_id: mk.dataset.parent });
      location.reload();
    } catch (err) { status("Could not create the folder: " + err.message, true); }
  });

  document.querySelectorAll("form.rename-form").forEach(function (f) {
    f.addEventListener("submit", async function (e) {
      e.preventDefault();
      const base = f.dataset.kind === "folder" ? "/api/v1/folders/" : "/api/v1/files/";
      try {
        await api("PATCH", base + f.dataset.id, { name: f.elements.name.value });
        if (location.pathname.startsWith("/v/")) {
          const parts = location.pathname.split("/");
          parts[parts.length - 1] = encodeURIComponent(f.elements.name.value);
          location.assign(parts.join("/"));
        } else { location.reload(); }
      } catch (err) { status("Could not rename: " + err.message, true); }
    });
  });

  document.querySelectorAll("button.delete").forEach(function (b) {
    b.addEventListener("click", async function () {
      if (!confirm("Delete " + b.dataset.name + "?")) return;
      const url = b.dataset.kind === "folder"
        ? "/api/v1/folders/" + b.dataset.id + "?recursive=true"
        : "/api/v1/files/" + b.dataset.id;
      try {
        await api("DELETE", url);
        if (location.pathname.startsWith("/v/")) {
          const parts = location.pathname.split("/"); parts.pop();
          location.assign(parts.length > 2 ? parts.join("/").replace(/^\/v\//, "/d/") + "/" : "/");
        } else { location.reload(); }
      } catch (err) { status("Could not delete: " + err.message, true); }
    });
  });

  const sh = document.getElementById("share-form");
  if (sh) sh.addEventListener("submit", async function (e) {
    e.preventDefault();
    const body = { file_id: sh.dataset.id };
    if (sh.elements.expires.value) body.expires = sh.elements.expires.value;
    if (sh.elements.password.value) body.password = sh.elements.password.value;
    try {
      const link = await api("POST", "/api/v1/shares", body);
      const out = document.getElementById("share-result");
      out.textContent = "";
      const label = document.createElement("label");
      label.htmlFor = "share-url"; label.textContent = "Share link ";
      const input = document.createElement("input");
      input.id = "share-url"; input.readOnly = true; input.value = link.url;
      out.appendChild(label); out.appendChild(input);
      input.focus(); input.select();
      sh.elements.password.value = "";
    } catch (err) { status("Could not create the link: " + err.message, true); }
  });

  document.querySelectorAll("button.revoke").forEach(function (b) {
    b.addEventListener("click", async function () {
      try {
        await api("DELETE", "/api/v1/shares/" + b.dataset.shareId);
        location.reload();
      } catch (err) { status("Could not revoke: " + err.message, true); }
    });
  });
})();
"""

#: name -> (body, MIME type)
ASSETS: dict[str, tuple[str, str]] = {
    "style.css": (STYLE, "text/css; charset=utf-8"),
    "app.js": (SCRIPT, "text/javascript; charset=utf-8"),
}
