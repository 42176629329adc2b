"""The README's training rules: an epoch improves when val WER falls, or stays with a lower val loss; the LR halves
after every 2 epochs without improvement; training stops after `patience` of them; gradients are clipped to
`grad_clip`. The rules run on a scripted sequence of validation results, as fit sees them."""

import copy
import csv

import pytest
import torch

import avasr.train
from avasr.checkpoint import LAST_CHECKPOINT
from avasr.config import Config
from avasr.data.dataset import collate
from avasr.objective import ctc_objective
from avasr.train import METRICS_FILE, EarlyStopState, fit, learning_rate, train_one_epoch
from tests.synthetic import TINY, TRANSCRIPTS, dataset

# (val WER, val loss) of each epoch, and what the rules make of it with the defaults (patience 5, LR x 0.5 after
# every 2 epochs without improvement)
SCRIPT = [
    (1.0, 5.0),  # 1 the first: best
    (1.0, 4.0),  # 2 same WER, lower loss: best
    (0.8, 4.5),  # 3 lower WER, higher loss: best
    (0.8, 4.5),  # 4 same WER, same loss: bad 1
    (0.9, 3.0),  # 5 higher WER, lower loss: bad 2 -> LR halves
    (0.7, 5.0),  # 6 best
    (0.7, 5.0),  # 7 bad 1
    (0.75, 4.0),  # 8 bad 2 -> LR halves
    (0.8, 1.0),  # 9 bad 3
    (0.7, 5.1),  # 10 bad 4 -> LR halves
    (0.9, 2.0),  # 11 bad 5: training stops before epoch 12
]
IMPROVED = [True, True, True, False, False, True, False, False, False, False, False]
BAD_EPOCHS = [0, 0, 0, 1, 2, 0, 1, 2, 3, 4, 5]
DECAYS_BEFORE = [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3]  # LR halvings applied when each epoch starts
BEST_EPOCH = 6


def test_improvement_bad_epochs_and_lr_decay_follow_the_script():
    config = Config()
    assert (config.patience, config.lr_decay_patience, config.lr_decay_factor) == (5, 2, 0.5)  # README
    state = EarlyStopState()
    for (wer, loss), improved, bad, decays in zip(SCRIPT, IMPROVED, BAD_EPOCHS, DECAYS_BEFORE):
        assert state.lr_decays == decays
        assert state.update(wer, loss) == improved
        assert state.bad_epochs == bad
        if state.should_decay_lr(config.lr_decay_patience):
            state.lr_decays += 1
    assert (state.best_wer, state.best_loss) == (0.7, 5.0)
    assert [learning_rate(config, 0, 1, decays) for decays in range(4)] == [config.lr * 0.5**k for k in range(4)]


class ScriptedValidation:
    """Stands in for avasr.evaluation.evaluate inside fit: returns the next epoch's scripted result, so the rules
    are checked on known numbers while the model trains for real."""

    def __init__(self, script):
        self.results = iter(script)

    def __call__(self, model, loader, config, device, lexicon=None) -> dict:
        wer, loss = next(self.results)
        return {"wer": wer, "cer": wer / 2, "loss": loss}


def test_fit_halves_the_lr_after_two_bad_epochs_and_stops_after_patience(tmp_path, monkeypatch):
    monkeypatch.setattr(avasr.train, "evaluate", ScriptedValidation(SCRIPT))
    data = dataset(TRANSCRIPTS[:2])  # one batch an epoch
    config = TINY.replace(epochs=20, patience=Config().patience, output_dir=str(tmp_path))
    best = fit(config, datasets=(data, data))
    rows = list(csv.DictReader((tmp_path / METRICS_FILE).open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(SCRIPT) + 1))  # stopped after 5 bad epochs
    assert [float(r["lr"]) for r in rows] == pytest.approx([config.lr * 0.5**k for k in DECAYS_BEFORE])
    optimizer = torch.load(tmp_path / LAST_CHECKPOINT, weights_only=True)["optimizer"]
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(config.lr * 0.5 ** DECAYS_BEFORE[-1])  # really used
    assert (best["epoch"], best["val_wer"], best["val_loss"]) == (BEST_EPOCH, 0.7, 5.0)


def global_norm(tensors) -> float:
    return torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)).item()


@pytest.mark.parametrize("clip_over_norm", [0.1, 10.0])
def test_gradients_are_clipped_to_grad_clip(clip_over_norm):
    """One plain SGD step with LR 1 moves the weights by the gradient it was given: by its norm when that is under
    grad_clip, else by exactly grad_clip."""
    torch.manual_seed(0)
    batch = collate(dataset().utterances[:4])
    model = avasr.train.build_model(TINY)
    probe = copy.deepcopy(model).train()
    ctc_objective(probe(batch.audio, batch.video, batch.video_lengths), batch, TINY.label_smoothing).backward()
    norm = global_norm(p.grad for p in probe.parameters())
    config = TINY.replace(grad_clip=clip_over_norm * norm)
    before = [p.detach().clone() for p in model.parameters()]
    train_one_epoch(model, [batch], torch.optim.SGD(model.parameters(), lr=1.0), config, torch.device("cpu"))
    moved = global_norm(p.detach() - b for p, b in zip(model.parameters(), before))
    assert moved == pytest.approx(min(norm, config.grad_clip), rel=1e-4)
