"""A media player's view: a 60-second MP4 put with ``fsmount put`` is probed with ffprobe
through the mount, and the frame after ``-ss 45`` extracted from the mount equals the one
extracted from the local copy (the player reads the index at the end and the media at two
offsets at once, and seeks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fs_mounting import mount_store


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(args), capture_output=True, timeout=180, check=True)


def frame_at_45(path: Path) -> bytes:
    return run("ffmpeg", "-hide_banner", "-loglevel", "error", "-ss", "45", "-i", str(path),
               "-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "-").stdout


def test_video_through_the_mount(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    # Lossless video (several MiB, so reads span many chunks) with an audio track; the
    # index (moov) is written at the end, so players read the end first.
    run("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc=duration=60:size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=60",
        "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-g", "50",
        "-c:a", "aac", "-shortest", str(video))
    store = tmp_path / "store"
    run(sys.executable, "-m", "fsmount", "init", "--store", str(store))
    run(sys.executable, "-m", "fsmount", "put", "--store", str(store), str(video), "/clip.mp4")
    with mount_store(store, tmp_path / "mnt") as mp:
        mounted = mp.mnt / "clip.mp4"
        probe = json.loads(run("ffprobe", "-v", "error", "-print_format", "json",
                               "-show_format", "-show_streams", str(mounted)).stdout)
        assert float(probe["format"]["duration"]) >= 59.9
        assert {s["codec_type"] for s in probe["streams"]} == {"video", "audio"}
        from_mount = frame_at_45(mounted)
        local = frame_at_45(video)
        assert from_mount.startswith(b"\x89PNG") and len(from_mount) > 1000
        assert from_mount == local
        # The whole file reads back intact too.
        assert mounted.read_bytes() == video.read_bytes()
