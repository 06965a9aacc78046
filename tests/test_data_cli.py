import io
import json

import numpy as np
import pytest
from PIL import Image

from millivid import storage
from millivid.data.reader import open_dataset
from millivid_cli.main import main


@pytest.fixture
def rendered(tmp_path, capsys):
    uri = str(tmp_path / "ds")
    assert main(["data", "render", "--out", uri, "--episodes", "3", "--frames", "40", "--size", "16", "--hold", "2", "--seed", "4"]) == 0
    captured = capsys.readouterr()
    assert "rendered 3/3 episodes" in captured.err and "wrote" in captured.out
    return uri


def info(uri: str, capsys, *flags: str) -> tuple[int, dict | str]:
    code = main(["data", "info", uri, "--json", *flags])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else captured.err


def test_render_then_info_and_verify(rendered, capsys):
    code, summary = info(rendered, capsys, "--verify")
    assert code == 0 and summary["verified"] is True
    assert (summary["episodes"], summary["frames"], summary["height"], summary["width"]) == (3, 120, 16, 16)
    assert sum(summary["splits"].values()) == 3 and summary["bytes"] > 0
    manifest = open_dataset(rendered).manifest
    assert manifest.meta["data"]["seed"] == 4 and manifest.meta["data"]["hold"] == 2


def test_verify_fails_naming_the_shard(rendered, capsys):
    shard = storage.join(rendered, open_dataset(rendered).manifest.shards[0].path)
    data = bytearray(storage.read_bytes(shard))
    data[100] ^= 1
    storage.write_bytes(shard, bytes(data))
    assert info(rendered, capsys)[0] == 0  # without --verify the manifest is trusted
    code, error = info(rendered, capsys, "--verify")
    assert code == 1 and "checksum mismatch" in error and shard in error


def test_render_takes_defaults_from_a_preset(tmp_path, capsys):
    uri = str(tmp_path / "smoke")
    assert main(["data", "render", "--out", uri, "--config", "smoke", "data.episodes=2", "data.frames=12"]) == 0
    manifest = open_dataset(uri).manifest
    assert manifest.frame_size == (16, 16) and manifest.counts["episodes"] == 2 and manifest.frames == 24
    assert manifest.meta["data"]["hold"] == 2  # from the smoke preset
    assert main(["data", "render", "--out", uri, "--size", "24"]) == 2
    assert "size" in capsys.readouterr().err


def test_preview_png_and_video(rendered, tmp_path, capsys):
    png = tmp_path / "strip.png"
    assert main(["data", "preview", rendered, "--out", str(png), "--frames", "6"]) == 0
    image = Image.open(png)
    assert image.size == (6 * 128, 128)  # 16-pixel frames enlarged to 128
    for name in ("clip.mp4", "clip.gif", "walk-path.png"):
        assert main(["data", "preview", rendered, "--out", str(tmp_path / name), "--episode", "ep-000001"]) == 0
        assert (tmp_path / name).stat().st_size > 1000
    assert Image.open(io.BytesIO((tmp_path / "clip.gif").read_bytes())).n_frames == 40
    assert main(["data", "preview", rendered, "--out", str(tmp_path / "x.png"), "--episode", "nope"]) == 1
    assert "no episode 'nope'" in capsys.readouterr().err


def test_import_command(tmp_path, capsys):
    buffer = io.BytesIO()
    np.savez(buffer, video=np.full((6, 32, 32, 3), 77, np.uint8), actions=np.array([3, 3, 4, 4, 0, 0]))
    storage.write_bytes(str(tmp_path / "src" / "a.npz"), buffer.getvalue())
    out = str(tmp_path / "ds")
    assert main(["data", "import", str(tmp_path / "src"), "--out", out, "--size", "16", "--action-map", "3:1,4:2"]) == 0
    np.testing.assert_array_equal(open_dataset(out).read("a")["actions"], [1, 1, 2, 2, 0, 0])
    assert main(["data", "import", str(tmp_path / "src"), "--out", out, "--overwrite"]) == 1
    assert "unknown action ids [3, 4]" in capsys.readouterr().err


def test_import_and_render_never_replace_a_dataset_unasked(rendered, tmp_path, capsys):
    buffer = io.BytesIO()
    np.savez(buffer, video=np.full((6, 16, 16, 3), 9, np.uint8), actions=np.zeros(6, int))
    storage.write_bytes(str(tmp_path / "src" / "b.npz"), buffer.getvalue())
    before = open_dataset(rendered).episodes()
    for command in (["data", "import", str(tmp_path / "src"), "--out", rendered],
                    ["data", "render", "--out", rendered, "--episodes", "1", "--frames", "4", "--size", "16"]):
        assert main(command) == 1
        assert f"{rendered}: already holds a dataset; pass --overwrite" in capsys.readouterr().err
        assert open_dataset(rendered).episodes() == before
    assert main(["data", "import", str(tmp_path / "src"), "--out", rendered, "--overwrite"]) == 0
    assert open_dataset(rendered).episodes() == ["b"]


def test_a_folder_of_other_files_is_never_written_into(rendered, tmp_path, capsys):
    """Writing a dataset removes stray files from its `shards/`: a folder that holds files but no
    dataset (a user's, or a dataset's own `shards/`) is refused, with or without --overwrite."""
    buffer = io.BytesIO()
    np.savez(buffer, video=np.full((6, 16, 16, 3), 9, np.uint8), actions=np.zeros(6, int))
    storage.write_bytes(str(tmp_path / "src" / "b.npz"), buffer.getvalue())
    (tmp_path / "mine" / "shards").mkdir(parents=True)
    (tmp_path / "mine" / "shards" / "notes.txt").write_text("keep me")
    for out in (tmp_path / "mine", f"{rendered}/shards"):
        for flags in ([], ["--overwrite"]):
            assert main(["data", "import", str(tmp_path / "src"), "--out", str(out), *flags]) == 1
            assert f"{out}: holds files but no dataset (manifest.json)" in capsys.readouterr().err
    assert (tmp_path / "mine" / "shards" / "notes.txt").read_text() == "keep me"
    assert main(["data", "render", "--out", str(tmp_path / "mine"), "--episodes", "1", "--frames", "4", "--size", "16"]) == 1
    assert open_dataset(rendered).verify()


@pytest.mark.parametrize("flag", ["--size", "--shard-frames"])
def test_sizes_below_one_are_rejected_naming_the_flag(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as exited:
        main(["data", "import", str(tmp_path), "--out", str(tmp_path / "ds"), flag, "0"])
    assert exited.value.code == 2
    assert f"argument {flag}: 0: must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--val", "0.6", "--test", "0.6"], ["--val", "-0.1"]])
def test_impossible_split_flags_are_rejected_naming_them(tmp_path, capsys, flags):
    assert main(["data", "import", str(tmp_path), "--out", str(tmp_path / "ds"), *flags]) == 2
    assert "error: --val" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_preview_and_reads_catch_a_damaged_shard(rendered, tmp_path, capsys):
    shard = storage.join(rendered, open_dataset(rendered).manifest.shards[0].path)
    data = bytearray(storage.read_bytes(shard))
    data[len(data) // 2] ^= 1
    storage.write_bytes(shard, bytes(data))
    assert main(["data", "preview", rendered, "--out", str(tmp_path / "x.png")]) == 1
    assert f"error: {shard}: checksum mismatch" in capsys.readouterr().err


def test_info_on_a_missing_dataset(tmp_path, capsys):
    code, error = info(str(tmp_path / "nothing"), capsys)
    assert code == 1 and "no manifest.json" in error
