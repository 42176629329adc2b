"""Which manifests a corpus folder is evaluated on, and which splits a sweep's test set brings along."""

import json

import pytest

from avasr.corpus.report import CorpusError
from avasr.corpus.splits import evaluation_splits, other_test_splits
from avasr.sweep.champion import split_names

MANIFESTS = {
    "train": "train_manifest.txt",
    "val": "val_manifest.txt",
    "test_unseen_voice": "test_unseen_voice_manifest.txt",
    "test_unseen_face": "test_unseen_face_manifest.txt",
    "test": "test_manifest.txt",
}


def corpus_folder(tmp_path, manifests=MANIFESTS):
    (tmp_path / "corpus.json").write_text(json.dumps({"id": "c", "manifests": manifests}))
    for file in manifests.values():
        (tmp_path / file).write_text("a.wav|a.mp4|bin blue\n")
    return tmp_path


def test_a_built_in_corpus_is_evaluated_on_every_split_but_train_in_its_order(tmp_path):
    folder = corpus_folder(tmp_path)
    assert evaluation_splits(folder) == {
        "val": folder / "val_manifest.txt",
        "test_unseen_voice": folder / "test_unseen_voice_manifest.txt",
        "test_unseen_face": folder / "test_unseen_face_manifest.txt",
        "test": folder / "test_manifest.txt",
    }


def test_an_imported_corpus_without_corpus_json_has_val_and_test(tmp_path):
    assert evaluation_splits(tmp_path) == {"val": tmp_path / "val_manifest.txt", "test": tmp_path / "test_manifest.txt"}
    assert other_test_splits(tmp_path / "test_manifest.txt") == {}


def test_the_test_manifest_brings_its_corpus_s_other_test_splits(tmp_path):
    folder = corpus_folder(tmp_path)
    assert other_test_splits(folder / "test_manifest.txt") == {
        "test_unseen_voice": folder / "test_unseen_voice_manifest.txt",
        "test_unseen_face": folder / "test_unseen_face_manifest.txt",
    }
    assert list(other_test_splits(folder / "test_unseen_face_manifest.txt")) == ["test_unseen_voice", "test"]


def test_a_manifest_the_corpus_does_not_list_brings_nothing(tmp_path):
    folder = corpus_folder(tmp_path)
    (folder / "mine.txt").write_text("a.wav|a.mp4|bin blue\n")
    assert other_test_splits(folder / "mine.txt") == {}


def test_a_listed_split_whose_manifest_is_missing_is_left_out(tmp_path):
    folder = corpus_folder(tmp_path)
    (folder / "test_unseen_face_manifest.txt").unlink()
    assert list(other_test_splits(folder / "test_manifest.txt")) == ["test_unseen_voice"]


def test_a_corrupt_corpus_json_names_the_file(tmp_path):
    (tmp_path / "corpus.json").write_text("{not json")
    with pytest.raises(CorpusError, match="corpus.json: cannot read its `manifests`"):
        evaluation_splits(tmp_path)


def test_a_trial_s_split_metrics_are_named_in_the_corpus_s_order():
    metrics = {"val_wer": 0.1, "test_wer": 0.5, "test_unseen_face_wer": 0.2, "test_unseen_voice_wer": 0.3}
    assert split_names(metrics) == ["test_unseen_voice", "test_unseen_face"]
    assert split_names({"test_wer": 0.5, "test_cer": 0.2}) == []
