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
@pytest.mark.slow
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


@pytest.mark.slow
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


def test_the_train_command_writes_a_checkpoint_and_removes_its_state(tmp_path, capsys):
    """`questbench train` end to end on IDX files in the on-disk layout (a slice of the built-in test split as
    both splits): the checkpoint and its card are written and the per-epoch training state is gone."""
    from questbench.cli import main
    from questbench.data.idx import write_idx
    test = load_dataset("fashion-mnist", "test").subset(range(96))
    data = tmp_path / "fmnist"
    data.mkdir()
    for split in ("train", "t10k"):
        write_idx(data / f"{split}-images-idx3-ubyte", test.images)
        write_idx(data / f"{split}-labels-idx1-ubyte", test.labels)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--attention", "quest", "--seed", "1", "--epochs", "1", "--out", str(tmp_path / "zoo"),
              "--data-root", str(data), "--quiet"])
    assert exc.value.code == 0, capsys.readouterr().err
    written = sorted(p.name for p in (tmp_path / "zoo").iterdir())
    assert written == ["fmnist-vit-quest-s1.json", "fmnist-vit-quest-s1.safetensors"]
