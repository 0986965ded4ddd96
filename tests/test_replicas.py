"""Several app processes over one checkpoints folder: training is limited per lock file across servers, and
two replicas behind the sticky demo proxy both serve, share trainings' checkpoints and refuse a second run."""
from __future__ import annotations

import os
import signal

import pytest

from vae_explorer.server import Explorer, ViewError
from vae_explorer.server.jobs import LOCK_NAME
from vae_explorer.server.launcher import Replicas
from vae_explorer.server.proxy import COOKIE

from .conftest import copy_checkpoints, shown, wait_for

pytestmark = pytest.mark.subprocess  # training processes, app processes, the proxy

MACHINE_BUSY = "already running on this machine, started from another page server"



def test_one_training_per_lock_file_across_servers(tmp_path):
    """Two servers' explorers over one folder (as two replicas): the second is refused, naming the run, while
    the first one's training process lives; a server with its own lock file is not; the lock goes with the
    process, even when it is killed."""
    folder = tmp_path / "checkpoints"
    a, b = Explorer(folder, projection_cache=""), Explorer(folder, projection_cache="")
    elsewhere = Explorer(folder, projection_cache="", train_lock=tmp_path / "other-machine.lock")
    try:
        a.train_start(model="ae", dataset="digits", epochs=500, name="long_a")
        with pytest.raises(ViewError, match=MACHINE_BUSY) as refused:
            b.train_start(model="ae", dataset="digits", epochs=1, name="second")
        assert "ae on digits, checkpoint long_a" in str(refused.value) and f"pid {os.getpid()}" in str(refused.value)
        with pytest.raises(ViewError, match=r"already running \(ae on digits, checkpoint long_a\)"):
            a.train_start(model="ae", dataset="digits", epochs=1, name="third")  # the server's own limit first
        assert (folder / LOCK_NAME).is_file()

        elsewhere.train_start(model="ae", dataset="digits", epochs=1, name="other_machine")  # another lock: starts
        assert wait_for(lambda: not elsewhere.train_running(), 60), elsewhere.train_status()[0]
        assert elsewhere.jobs.current.status == "finished", elsewhere.jobs.current.message

        # A crash frees the machine: the kernel drops the lock with its last holder, no stale file to clean up.
        a.jobs.current._process.send_signal(signal.SIGKILL)
        assert wait_for(lambda: not a.train_running(), 10)
        b.train_start(model="ae", dataset="digits", epochs=1, name="after_the_crash")
        assert wait_for(lambda: not b.train_running(), 60), b.train_status()[0]
        assert b.jobs.current.status == "finished", b.jobs.current.message
        # And the server that trained last starts again at once (its process has exited, the lock is free).
        b.train_start(model="ae", dataset="digits", epochs=1, name="again")
        assert wait_for(lambda: not b.train_running(), 60)
        assert {"after_the_crash", "again", "other_machine"} <= set(a.checkpoint_names())
    finally:
        for ex in (a, b, elsewhere):
            ex.close()


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_two_replicas_behind_the_proxy_share_checkpoints_and_one_training(tmp_path):
    from gradio_client import Client, handle_file
    from PIL import Image

    folder = copy_checkpoints(tmp_path / "shared-checkpoints")
    replicas = Replicas(2, folder)
    try:
        # The proxy keeps each visitor on the replica its cookie names; a client keeps the cookie the proxy
        # set on its first answer. Here each client is given one, so that both replicas are reached.
        a, b = (Client(replicas.url, analytics_enabled=False, verbose=False,
                       httpx_kwargs={"cookies": {COOKIE: str(i)}}) for i in (0, 1))
        fresh = Client(replicas.url, analytics_enabled=False, verbose=False)
        assert fresh.cookies.get(COOKIE) in ("0", "1")  # set by the proxy, kept for the client's later calls
        for client in (a, b, fresh):
            assert "digits_vae" in client.predict(api_name="/checkpoints")
        # An upload in and an image out, through the proxy (files live in the replica that made them).
        Image.new("L", (30, 30), 0).save(tmp_path / "up.png")
        grid, _, table = b.predict(["digits_ae"], "", handle_file(str(tmp_path / "up.png")), 0,
                                   api_name="/reconstruct")
        with Image.open(shown(grid)) as im:
            assert im.format == "PNG" and "upload" in table

        started = a.predict("ae", "digits", 2, None, "bernoulli", 0.0, 3, 1e-3, 64, "auto", "class_ae", "",
                            api_name="/train_start")[0]
        assert "class_ae" in started
        # B is another server: its own job list is empty, and the machine's lock refuses a second run.
        assert "No training yet" in b.predict(api_name="/train_status")[0]
        with pytest.raises(Exception, match=MACHINE_BUSY + ".*checkpoint class_ae"):
            b.predict("ae", "digits", 2, None, "bernoulli", 0.0, 1, 1e-3, 64, "auto", "from_b", "",
                      api_name="/train_start")
        assert wait_for(lambda: "finished" in a.predict(api_name="/train_status")[0], 90, poll=0.5), \
            a.predict(api_name="/train_status")[0]

        # The checkpoint written through A is listed and served by B, read from the shared folder.
        assert "class_ae" in b.predict(api_name="/checkpoints")
        card = b.predict("class_ae", api_name="/model_card")
        assert "### class_ae" in card and "digits" in card
        _, _, b_map_note, _ = b.predict("class_ae", "digits_vae", "auto", 3, api_name="/latent_map")
        assert "359 test images" in b_map_note

        # The lock went with A's training process: B trains now, and A sees B's checkpoint.
        assert "from_b" in b.predict("ae", "digits", 2, None, "bernoulli", 0.0, 1, 1e-3, 64, "auto", "from_b", "",
                                     api_name="/train_start")[0]
        assert wait_for(lambda: "finished" in b.predict(api_name="/train_status")[0], 90, poll=0.5)
        assert "from_b" in a.predict(api_name="/checkpoints")
    finally:
        replicas.stop()
    # Nothing left running: the proxy, both servers and their training processes (each in its server's group).
    for process in (replicas.proxy, *replicas.apps):
        assert wait_for(lambda: not group_alive(process.proc.pid), 10), process.proc.args


def test_replicas_saving_one_umap_map_at_once_leave_a_whole_file(tmp_path):
    """Two replicas that finish the same UMAP map together each save it under a name of their own, then
    rename: no writer fails, the cache file is always one whole array, and no temporary file stays behind. With
    one shared temporary name (before), writers renamed each other's file away (FileNotFoundError here, 3 of 4
    writers) and a rename could expose a file another writer was still filling."""
    import threading

    import numpy as np

    from vae_explorer.server.umap_worker import save_map

    path = tmp_path / "projections" / "key.umap.npy"
    maps = [np.full((20_000, 2), i, np.float32) for i in range(4)]
    errors = []

    def save(emb):
        try:
            for _ in range(20):
                save_map(path, emb)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=save, args=(m,)) for m in maps]
    for t in threads:
        t.start()
    seen = []
    while any(t.is_alive() for t in threads):
        if path.exists():
            seen.append(np.load(path))
    for t in threads:
        t.join()
    assert not errors
    for emb in [*seen, np.load(path)]:
        assert emb.shape == (20_000, 2) and len(np.unique(emb)) == 1  # one writer's whole array
    assert sorted(p.name for p in path.parent.iterdir()) == ["key.umap.npy"]
    assert path.stat().st_mode & 0o044 == 0o044  # readable by replicas run by other users
