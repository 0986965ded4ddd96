"""The cap on Gradio's cached files (vae_explorer/server/cache.py), on a real gr.Blocks' file sets."""
from __future__ import annotations

import os
import threading
import time

import gradio as gr
import pytest

from vae_explorer.server.cache import KEEP_FRACTION, CacheJanitor, write_answer_image


def cached_file(root, name: str, size: int) -> str:
    """A file as Gradio writes one, in a folder of its own. Its age is its ctime, which only the kernel
    sets: the tests move the sweep's `now` instead."""
    folder = root / name
    folder.mkdir()
    path = folder / "image.png"
    path.write_bytes(b"x" * size)
    return str(path)


@pytest.fixture
def blocks():
    with gr.Blocks() as demo:
        gr.Image()
    return demo


def test_files_older_than_the_age_limit_go_and_younger_stay(blocks, tmp_path):
    old = cached_file(tmp_path, "a", 10)
    blocks.upload_file_set.add(old)
    janitor = CacheJanitor(blocks, cap_bytes=10**6, max_age_s=60, min_age_s=1, root=tmp_path)
    kept = janitor.sweep(now=time.time() + 30)  # 30 s old: under the age limit
    assert os.path.exists(old) and kept.removed == 0 and kept.files == 1 and kept.bytes == 10
    gone = janitor.sweep(now=time.time() + 120)
    assert not os.path.exists(old) and gone.removed == 1 and gone.freed == 10
    assert old not in blocks.upload_file_set
    assert not (tmp_path / "a").exists()  # its folder went with it
    assert tmp_path.exists()  # never the cache's root


def test_above_the_cap_the_oldest_go_down_to_a_share_of_it(blocks, tmp_path):
    paths = [cached_file(tmp_path, f"f{i}", 100) for i in range(10)]  # 1,000 bytes
    for i, p in enumerate(paths):  # their ctimes in order of creation; make the order unambiguous
        time.sleep(0.01)
        os.chmod(p, 0o644)  # a metadata change updates ctime: f0 oldest ... f9 newest
    blocks.upload_file_set.update(paths)
    janitor = CacheJanitor(blocks, cap_bytes=750, max_age_s=3600, min_age_s=1, root=tmp_path)
    result = janitor.sweep(now=time.time() + 10)
    left = [p for p in paths if os.path.exists(p)]
    assert result.bytes <= KEEP_FRACTION * 750 and result.bytes == 100 * len(left)
    assert left == paths[-len(left):], "the oldest files go first"
    assert set(left) == blocks.upload_file_set


def test_files_younger_than_min_age_are_spared_even_above_the_cap(blocks, tmp_path):
    path = cached_file(tmp_path, "new", 1000)
    blocks.upload_file_set.add(path)
    janitor = CacheJanitor(blocks, cap_bytes=10, max_age_s=3600, min_age_s=30, root=tmp_path)
    assert janitor.sweep(now=time.time() + 5).removed == 0 and os.path.exists(path)
    assert janitor.sweep(now=time.time() + 60).removed == 1


def test_paths_whose_file_is_gone_are_forgotten(blocks, tmp_path):
    path = cached_file(tmp_path, "gone", 5)
    blocks.upload_file_set.add(path)
    os.remove(path)
    result = CacheJanitor(blocks, cap_bytes=100).sweep()
    assert result.forgotten == 1 and path not in blocks.upload_file_set


def test_each_file_is_read_once_and_all_again_every_few_sweeps(blocks, tmp_path, monkeypatch):
    from vae_explorer.server import cache

    paths = [cached_file(tmp_path, f"f{i}", 10) for i in range(5)]
    blocks.upload_file_set.update(paths)
    reads = []
    real_lstat = os.lstat
    monkeypatch.setattr(cache.os, "lstat", lambda p: reads.append(p) or real_lstat(p))
    janitor = CacheJanitor(blocks, cap_bytes=10**6)
    assert janitor.sweep().bytes == 50 and sorted(reads) == sorted(paths)
    newer = cached_file(tmp_path, "later", 7)
    blocks.upload_file_set.add(newer)
    reads.clear()
    assert janitor.sweep().bytes == 57 and reads == [newer]  # only the new file's stat is read
    os.remove(paths[0])  # deleted behind the janitor's back: found at the next full reading
    for _ in range(cache.RESTAT_EVERY - 2):
        janitor.sweep()
    assert paths[0] in blocks.upload_file_set
    result = janitor.sweep()
    assert result.forgotten == 1 and result.bytes == 47 and paths[0] not in blocks.upload_file_set


def test_a_file_handed_out_again_since_its_first_reading_is_spared(blocks, tmp_path):
    # The memo holds the first ctime; an image answered again is touched (write_answer_image): the janitor
    # reads the file's time again before deleting it, so a page about to fetch it still finds it.
    path = cached_file(tmp_path, "again", 1000)
    blocks.upload_file_set.add(path)
    janitor = CacheJanitor(blocks, cap_bytes=10, max_age_s=3600, min_age_s=0.1)
    assert janitor.sweep(now=os.lstat(path).st_ctime + 0.05).removed == 0  # young: read and kept
    time.sleep(0.3)
    os.utime(path)
    assert janitor.sweep(now=os.lstat(path).st_ctime + 0.05).removed == 0 and os.path.exists(path)
    assert janitor.sweep(now=os.lstat(path).st_ctime + 1).removed == 1


def test_an_answer_image_is_written_once_and_never_rewritten_in_place(tmp_path):
    # Gradio's own writer truncates and rewrites an image answered again while another client may be
    # downloading it (a short response); this one leaves the file, touched.
    from PIL import Image

    img = Image.new("L", (8, 8), 128)
    first = write_answer_image(img, str(tmp_path), format="png")
    assert Image.open(first).getpixel((3, 3)) == 128
    with open(first, "ab") as f:  # mark the copy: a writer that opens it again (Gradio's) would drop the mark
        f.write(b"mark")
    marked, ctime = open(first, "rb").read(), os.stat(first).st_ctime_ns
    time.sleep(0.01)
    again = write_answer_image(img, str(tmp_path), format="png")
    assert again == first and open(again, "rb").read() == marked and os.stat(again).st_ctime_ns > ctime
    assert [p.name for p in os.scandir(os.path.dirname(first))] == ["image.png"]  # no staging file left
    other = write_answer_image(Image.new("L", (8, 8), 7), str(tmp_path), format="png")
    assert os.path.dirname(other) != os.path.dirname(first)  # named by the image's hash, as Gradio does


def test_gradio_images_go_through_the_writer_once_installed(tmp_path):
    from PIL import Image

    from vae_explorer.server.cache import install_answer_image_writer

    install_answer_image_writer()  # what the app's launch does
    image = gr.Image(format="png")
    image.GRADIO_CACHE = str(tmp_path)
    img = Image.new("L", (8, 8), 99)
    first = image.postprocess(img).path
    with open(first, "ab") as f:
        f.write(b"mark")
    assert image.postprocess(img).path == first and open(first, "rb").read().endswith(b"mark")  # not rewritten


def test_files_gradio_must_keep_are_never_deleted(blocks, tmp_path):
    path = cached_file(tmp_path, "example", 1000)
    component = next(iter(blocks.blocks.values()))
    component.keep_in_cache.add(path)
    blocks.upload_file_set.add(path)
    CacheJanitor(blocks, cap_bytes=10, max_age_s=1, min_age_s=0).sweep(now=time.time() + 100)
    assert os.path.exists(path)


def test_sweeping_while_requests_add_files(blocks, tmp_path):
    """Request threads add to the sets while the janitor sweeps: no 'set changed size' error, no file lost
    from tracking, and the cap holds once the adding stops."""
    stop = threading.Event()
    added = []

    def add():
        i = 0
        while not stop.is_set():
            p = cached_file(tmp_path, f"r{i}", 50)
            blocks.upload_file_set.add(p)
            added.append(p)
            i += 1

    janitor = CacheJanitor(blocks, cap_bytes=5_000, max_age_s=3600, min_age_s=0, root=tmp_path)
    writer = threading.Thread(target=add)
    writer.start()
    try:
        for _ in range(50):
            janitor.sweep()
    finally:
        stop.set()
        writer.join()
    final = janitor.sweep(now=time.time() + 1)
    assert final.bytes <= 5_000
    on_disk = {p for p in added if os.path.exists(p)}
    assert on_disk == blocks.upload_file_set  # every file left is tracked, every tracked path exists


def test_stop_deletes_every_tracked_file(blocks, tmp_path):
    paths = [cached_file(tmp_path, f"s{i}", 10) for i in range(3)]
    blocks.upload_file_set.update(paths)
    janitor = CacheJanitor(blocks, cap_bytes=10**6, every_s=0.05, root=tmp_path).start()
    janitor.stop(delete_all=True)
    assert not any(os.path.exists(p) for p in paths) and not blocks.upload_file_set


@pytest.mark.parametrize("bad", [dict(cap_bytes=0), dict(cap_bytes=10, max_age_s=0), dict(cap_bytes=10, every_s=0)])
def test_bad_settings_are_refused(blocks, bad):
    with pytest.raises(ValueError):
        CacheJanitor(blocks, **bad)
