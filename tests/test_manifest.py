import pytest

from avasr.data.manifest import ManifestError, read_manifest, write_manifest


@pytest.fixture
def files(tmp_path):
    for name in ("a.wav", "a.mp4", "b.wav", "b.mp4"):
        (tmp_path / "media" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "media" / name).write_bytes(b"x")
    return tmp_path


def test_paths_are_relative_to_the_manifest_and_comments_skipped(files):
    m = files / "m.txt"
    m.write_text("# a comment\n\nmedia/a.wav|media/a.mp4|Hello, World!\n  \nmedia/b.wav|media/b.mp4|bin blue\n")
    entries = read_manifest(m)
    assert [e.transcript for e in entries] == ["hello world", "bin blue"]
    assert entries[0].audio_path == (files / "media" / "a.wav").resolve()
    assert entries[1].where == f"{m.resolve()}:5"
    assert entries[0].utterance_id == "media/a"


def test_all_problems_are_reported_together_with_file_and_line(files):
    m = files / "m.txt"
    m.write_text(
        "media/a.wav|media/a.mp4\n"  # 1: two fields
        "media/a.wav|media/missing.mp4|ok\n"  # 2: missing file
        "media/a.wav|media/a.mp4|   \n"  # 3: empty transcript
        "media/a.wav|media/a.mp4|na\u00efve\n"  # 4: out of vocabulary
        "media/b.wav|media/b.mp4|fine\n"
    )
    with pytest.raises(ManifestError) as err:
        read_manifest(m)
    msg, where = str(err.value), str(m.resolve())
    assert "4 bad line(s)" in msg
    assert f"{where}:1: expected 3 fields" in msg
    assert f"{where}:2: missing file(s): " in msg and "missing.mp4" in msg
    assert f"{where}:3: empty transcript" in msg
    assert f"{where}:4: characters outside the vocabulary" in msg
    assert len(err.value.problems) == 4


def test_empty_or_unreadable_manifest(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ManifestError, match="no utterances"):
        read_manifest(tmp_path / "empty.txt")
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path / "absent.txt")


def test_write_then_read_round_trip(files):
    m = write_manifest(files / "out" / "m.txt", [(files / "media/a.wav", files / "media/a.mp4", "It's OK.")])
    assert m.read_text() == "../media/a.wav|../media/a.mp4|it's ok\n"
    assert read_manifest(m)[0].transcript == "it's ok"
