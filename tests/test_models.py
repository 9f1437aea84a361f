import json

import pytest
import torch

import questbench
from questbench.errors import QuestbenchError
from questbench.models.build import Preprocess, card_path, load_checkpoint, save_checkpoint

from conftest import make_tiny


def test_model_takes_unit_range_images_of_any_size_and_channels():
    m = make_tiny("quest")
    for shape in [(2, 1, 28, 28), (2, 3, 32, 32), (2, 1, 40, 24)]:
        assert m(torch.rand(shape)).shape == (2, 10)


def test_preprocess_normalizes_inside():
    p = Preprocess((3, 4, 4), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(p(torch.full((1, 3, 4, 4), 0.75)), torch.ones(1, 3, 4, 4))
    gray = Preprocess((1, 4, 4), (0.0,), (1.0,))
    rgb = torch.rand(1, 1, 4, 4).expand(1, 3, 4, 4)
    assert torch.allclose(gray(rgb), rgb[:, :1], atol=1e-6)  # luma of equal channels is the gray value


def test_checkpoint_round_trip(tmp_path):
    m = make_tiny("qknorm_hs", seed=3)
    save_checkpoint(m, tmp_path / "m.safetensors", {"note": "x"})
    assert card_path(tmp_path / "m.safetensors").is_file()
    loaded = questbench.load_model(str(tmp_path / "m.safetensors"))
    assert not loaded.training
    assert loaded.spec.attention == "qknorm_hs" and loaded.card["note"] == "x"
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded(x), m(x))


def test_fp16_checkpoint_loads_close(tmp_path):
    m = make_tiny("quest", seed=4)
    save_checkpoint(m, tmp_path / "h.safetensors", dtype=torch.float16)
    loaded = load_checkpoint(tmp_path / "h.safetensors")
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(loaded(x), m(x), atol=2e-2)


def test_sha256_mismatch_is_a_clear_error(tmp_path):
    m = make_tiny()
    save_checkpoint(m, tmp_path / "m.safetensors")
    cp = card_path(tmp_path / "m.safetensors")
    card = json.loads(cp.read_text())
    card["sha256"] = "0" * 64
    cp.write_text(json.dumps(card))
    with pytest.raises(QuestbenchError, match="sha256 mismatch"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_corrupted_file_is_a_clear_error(tmp_path):
    m = make_tiny()
    save_checkpoint(m, tmp_path / "m.safetensors")
    p = tmp_path / "m.safetensors"
    p.write_bytes(p.read_bytes()[:100])
    cp = card_path(p)
    card = json.loads(cp.read_text())
    card.pop("sha256")  # no recorded hash: the safetensors reader itself must fail cleanly
    cp.write_text(json.dumps(card))
    with pytest.raises(QuestbenchError, match="cannot read safetensors"):
        load_checkpoint(p)


def test_pickle_checkpoint_loads_weights_only(tmp_path):
    m = make_tiny()
    save_checkpoint(m, tmp_path / "m.safetensors")
    torch.save(m.net.state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(json.dumps({"spec": json.loads(card_path(tmp_path / "m.safetensors")
                                                                   .read_text())["spec"]}))
    loaded = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), m(x))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": m.net.state_dict(), "x": Evil()}, tmp_path / "m.pt")
    with pytest.raises(QuestbenchError, match="weights_only"):
        load_checkpoint(tmp_path / "m.pt")


def test_missing_checkpoint_and_card(tmp_path):
    with pytest.raises(QuestbenchError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "a.safetensors").write_bytes(b"x")
    with pytest.raises(QuestbenchError, match="no model card"):
        load_checkpoint(tmp_path / "a.safetensors")
