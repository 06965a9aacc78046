import pytest

from millivid import storage


@pytest.fixture
def root(storage_root):
    return storage_root


def test_atomic_write_and_read(root):
    uri = storage.join(root, "a", "b.json")
    storage.write_json(uri, {"x": 1})
    assert storage.read_json(uri) == {"x": 1}
    assert storage.exists(uri)
    assert len(storage.sha256(uri)) == 64


def test_failed_write_leaves_nothing(root):
    uri = storage.join(root, "c.bin")
    with pytest.raises(RuntimeError):
        with storage.atomic_open(uri) as handle:
            handle.write(b"partial")
            raise RuntimeError("crash mid-write")
    assert not storage.exists(uri)
    fs, path = storage.filesystem(root)
    leftovers = fs.ls(path) if fs.exists(path) else []
    assert leftovers == []


def test_overwrite_is_atomic_replacement(root):
    uri = storage.join(root, "d.bin")
    storage.write_bytes(uri, b"old")
    with pytest.raises(RuntimeError):
        with storage.atomic_open(uri) as handle:
            handle.write(b"new-but-broken")
            raise RuntimeError("crash")
    assert storage.read_bytes(uri) == b"old"


def test_bad_json_names_file(root):
    uri = storage.join(root, "bad.json")
    storage.write_bytes(uri, b"{not json")
    with pytest.raises(ValueError, match="bad.json"):
        storage.read_json(uri)
