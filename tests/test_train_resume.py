"""Training state after every epoch; --resume continues a killed run to the uninterrupted run's weights."""
from __future__ import annotations

import pytest
import torch

from questbench.data import load_dataset
from questbench.errors import QuestbenchError
from questbench.models.build import ModelSpec
from questbench.models.train import FMNIST_SPEC, Recipe, train

pytestmark = pytest.mark.timeout(300)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def fmnist():
    test = load_dataset("fashion-mnist", "test")
    # the built-in test split stands in for the training split (the Debian train files may be absent in CI)
    return test.subset(range(512)), test.subset(range(512, 640))


def _run(fmnist, attention, **kw):
    torch.set_num_threads(1)
    spec = ModelSpec(attention=attention, **FMNIST_SPEC)
    recipe = Recipe(epochs=2, batch_size=64, seed=3)
    return train(spec, recipe, fmnist[0], fmnist[1], quiet=True, **kw)


@pytest.mark.parametrize("attention", ["quest", "qknorm_hs"])
def test_a_killed_run_resumes_to_the_uninterrupted_weights(fmnist, tmp_path, attention):
    whole, card = _run(fmnist, attention)

    def kill_after_first_epoch(epoch):
        if epoch == 1:
            raise Killed

    state = tmp_path / "m.train-state.pt"
    with pytest.raises(Killed):
        _run(fmnist, attention, checkpoint=state, on_epoch_end=kill_after_first_epoch)
    assert state.is_file()
    resumed, rcard = _run(fmnist, attention, checkpoint=state, resume=True)
    assert rcard["resumed_from_epoch"] == 1
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert rcard["test_top1"] == card["test_top1"]


def test_resume_without_the_generator_state_would_differ(fmnist, tmp_path):
    """The oracle above can fail: a resume that restarts the data order from the seed gives other weights."""
    whole, _ = _run(fmnist, "standard")
    state = tmp_path / "s.pt"

    def stop(epoch):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        _run(fmnist, "standard", checkpoint=state, on_epoch_end=stop)
    saved = torch.load(state, weights_only=True)
    saved["generator"] = torch.Generator().manual_seed(3).get_state()
    torch.save(saved, state)
    wrong, _ = _run(fmnist, "standard", checkpoint=state, resume=True)
    assert any(not torch.equal(whole.state_dict()[k], wrong.state_dict()[k]) for k in whole.state_dict())


def test_a_checkpoint_of_another_recipe_or_without_resume_is_refused(fmnist, tmp_path):
    state = tmp_path / "q.pt"

    def stop(epoch):
        raise Killed

    with pytest.raises(Killed):
        _run(fmnist, "quest", checkpoint=state, on_epoch_end=stop)
    with pytest.raises(QuestbenchError, match="--resume"):
        _run(fmnist, "quest", checkpoint=state)
    with pytest.raises(QuestbenchError, match="another model spec"):
        _run(fmnist, "standard", checkpoint=state, resume=True)
    state.write_bytes(b"not a checkpoint")
    with pytest.raises(QuestbenchError, match="cannot be read"):
        _run(fmnist, "quest", checkpoint=state, resume=True)
