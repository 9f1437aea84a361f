"""Your own model from Python: evaluate(), attack() and corrupt(), checked against the suite runner and the
libraries underneath."""
import numpy as np
import pytest
import torch

import questbench
from conftest import make_tiny
from questbench.errors import QuestbenchError

SUITE = {"seed": 2, "batch_size": 8, "num_workers": 0, "models": ["ignored"], "data": {"samples": 12},
         "corruptions": {"names": ["fog"], "severities": [2]},
         "attacks": [{"attack": "pgd", "eps": ["2/255"], "steps": 3, "samples": 6}]}


def test_evaluate_an_nn_module_matches_the_registry_run(tmp_path, tiny_pair):
    from questbench.models.registry import load_model
    registered = load_model("tiny-quest", registry_files=[tiny_pair])
    net = registered.net  # a bare timm ViT: normalization must come from `preprocessing`
    net.train()  # as a user's model may be found: in training mode, one parameter frozen
    dropouts = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    for m in dropouts:  # so that a forward left in training mode gives other predictions (else this cannot fail)
        m.p = 0.5
    assert dropouts
    x = torch.rand(4, 1, 28, 28)
    assert not torch.equal(net(x), net(x))  # training mode is visible in the outputs
    net.pos_embed.requires_grad_(False)
    res = questbench.evaluate(net, SUITE, out=tmp_path / "mine", name="mine", device="cpu",
                              preprocessing={"mean": [0.5], "std": [0.5], "input_size": (1, 28, 28)})
    assert net.training is True  # left as found
    assert [p.requires_grad for p in net.parameters()] == [n != "pos_embed" for n, _ in net.named_parameters()]
    ref = questbench.evaluate(registered, SUITE, out=tmp_path / "reg", name="mine", device="cpu")  # eval, as found
    key = ["evaluation", "setting", "sample_id"]
    a = res.samples.sort_values(key).reset_index(drop=True)
    b = ref.samples.sort_values(key).reset_index(drop=True)
    assert len(a) == 12 + 12 + 6 and a[key + ["pred", "correct"]].equals(b[key + ["pred", "correct"]])
    assert res.provenance["models"]["mine"]["sha256"].startswith("state_dict:")
    assert res.provenance["models"]["mine"]["attention"] == "quest"
    again = questbench.evaluate(net, SUITE, out=tmp_path / "mine", name="mine", device="cpu",
                                preprocessing={"mean": [0.5], "std": [0.5], "input_size": (1, 28, 28)})
    assert len(again.samples) == len(res.samples)
    with torch.no_grad():
        next(net.parameters()).add_(0.5)  # other weights: the folder is not theirs
    with pytest.raises(QuestbenchError, match="models.mine"):
        questbench.evaluate(net, SUITE, out=tmp_path / "mine", name="mine", device="cpu",
                            preprocessing={"mean": [0.5], "std": [0.5], "input_size": (1, 28, 28)})
    with pytest.raises(QuestbenchError, match="nn.Module, a registry name"):
        questbench.evaluate(3.5, SUITE, out=tmp_path / "x")


@pytest.mark.slow
def test_evaluate_by_name_run_suite_and_make_table_give_the_cli_leaderboard(tmp_path, tiny_pair):
    from questbench.report.leaderboard import leaderboard
    suite = {**SUITE, "registry": [str(tiny_pair)]}
    by_name = questbench.evaluate(["tiny-std", "tiny-quest"], suite, out=tmp_path / "a")
    assert sorted(by_name.provenance["models"]) == ["tiny-quest", "tiny-std"]
    ran = questbench.run_suite({**suite, "models": ["tiny-std", "tiny-quest"]}, out=tmp_path / "b")
    assert questbench.make_table(by_name, "csv") == questbench.make_table(tmp_path / "b", "csv") != ""
    assert questbench.make_table(ran, "md") == leaderboard(tmp_path / "b", "md")
    assert questbench.make_table([tmp_path / "b"], "html") == leaderboard(tmp_path / "b", "html")
    with pytest.raises(QuestbenchError, match="preprocessing applies to your own"):
        questbench.evaluate("tiny-std", suite, out=tmp_path / "c", preprocessing={"mean": [0.5]})


def test_attack_one_batch_stays_in_budget_and_matches_the_evaluator():
    from questbench.evaluators.attacks import evaluate_attack
    from questbench.data.arrays import ArrayDataset
    from questbench.config.settings import AttackConfig
    model = make_tiny("quest", seed=4)
    rng = np.random.default_rng(0)
    ds = ArrayDataset((rng.random((8, 28, 28)) * 255).astype(np.uint8), rng.integers(0, 10, 8), "t", "t")
    x = torch.stack([ds[i][0] for i in range(8)])
    y = torch.tensor(ds.labels)
    x_adv = questbench.attack(model, x, y, "pgd", eps=4 / 255, steps=5)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 4 / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    ref = evaluate_attack(model, ds, AttackConfig("pgd", 4 / 255, steps=5), seed=0, batch_size=8)
    from questbench.evaluators.common import derive_seed
    same_seed = questbench.attack(model, x, y, "pgd", eps=4 / 255, steps=5,
                                  seed=derive_seed(0, AttackConfig("pgd", 4 / 255, steps=5).key, 0))
    with torch.no_grad():
        assert model(same_seed).argmax(1).tolist() == [r["pred"] for r in ref.records]
    patched = questbench.attack(model, x, y, "patch", patches=1, steps=2)
    assert (patched != x).flatten(1).any(1).all() and ((patched != x).sum((1, 2, 3)) <= 7 * 7).all()
    with pytest.raises(QuestbenchError, match="attack 'pgd'"):
        questbench.attack(model, x, y, "pgd", eps=0.1, colour=3)


def test_corrupt_one_batch_equals_imagecorruptions_with_the_derived_seed():
    from imagecorruptions import corrupt as ic_corrupt
    from questbench.evaluators.corruption_reference import corruption_seed
    rng = np.random.default_rng(5)
    x = torch.from_numpy((rng.random((2, 3, 40, 48)) * 255).astype(np.uint8)).float() / 255
    out = questbench.corrupt(x, "impulse_noise", severity=3, seed=7, engine="imagecorruptions")
    for i in range(2):
        img = (x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        ref = ic_corrupt(img, corruption_name="impulse_noise", severity=3,
                         seed=corruption_seed(7, str(i), "impulse_noise", 3))
        assert torch.equal((out[i].permute(1, 2, 0) * 255).round().to(torch.uint8), torch.from_numpy(ref))
    single = questbench.corrupt(x[0], "fog", severity=1, engine="imagecorruptions")
    assert single.shape == (3, 40, 48) and 0 <= float(single.min()) and float(single.max()) <= 1


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_timm_weight_file_without_the_hub_loads_with_questbench_attention(tmp_path, fmt):
    """A timm-format state_dict on disk (what a populated Hugging Face cache holds) under a registry entry naming
    its timm architecture: loaded offline, its attention set by questbench, outputs equal to timm's own model
    with the same weights and the same kind swapped in."""
    import timm
    from safetensors.torch import save_file

    from questbench.models.attention import set_attention
    kwargs = dict(img_size=32, num_classes=10, depth=2)
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", **kwargs).eval()
    weights = tmp_path / f"model.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    else:
        torch.save(net.state_dict(), weights)
    reg = tmp_path / "reg.toml"
    reg.write_text(f'[[model]]\nname = "local-deit"\narch = "vit_tiny_patch16_224"\nattention = "quest"\n'
                   f'source = "path:{weights.name}"\nnum_classes = 10\ninput_size = [3, 32, 32]\n'
                   f'mean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]\narch_kwargs = {{ depth = 2 }}\n')
    model = questbench.load_model("local-deit", registry_files=[reg])
    assert model.spec.attention == "quest" and model.card["sha256"]
    by_path = questbench.load_model(str(weights), arch="vit_tiny_patch16_224", attention="quest", num_classes=10,
                                    input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3,
                                    arch_kwargs={"depth": 2})  # the same file by path, its spec as keywords
    set_attention(net, "quest")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - 0.5) / 0.5), atol=1e-5)
        assert torch.allclose(by_path(x), model(x), atol=1e-6)


# Field lists of two public RobustBench model_info files (RobustBench/robustbench, model_info/cifar10/...):
# Linf/Debenedetti2022Light_XCiT-S12.json and corruptions/Hendrycks2020AugMixWRN.json; other entries add the
# optional footnote and unreliable, and ImageNet corruption entries add corruptions_mce.
ROBUSTBENCH_LINF = {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                    "architecture", "eps", "clean_acc", "reported", "autoattack_acc"}
OPTIONAL = {"footnote", "unreliable", "corruptions_mce"}


def test_robustbench_export_has_robustbench_fields_and_layout(tmp_path, tiny_pair, capsys):
    import json

    from questbench.cli import main
    from questbench.run.runner import run_suite
    from questbench.config.suite import parse_suite
    text = (f'registry = ["{tiny_pair}"]\nmodels = ["tiny-std", "tiny-quest"]\nnum_workers = 0\nbatch_size = 8\n'
            '[data]\nsamples = 6\n[corruptions]\nnames = ["fog", "contrast"]\nseverities = [1, 3]\n'
            '[[attacks]]\nattack = "autoattack"\neps = ["8/255"]\nsamples = 2\n')
    run_suite(parse_suite(text, "t.toml"), tmp_path / "res", device="cpu", quiet=True)
    with pytest.raises(SystemExit) as exc:
        main(["export", str(tmp_path / "res"), "--format", "robustbench", "--out", str(tmp_path / "rb")])
    assert exc.value.code == 0
    linf = json.loads((tmp_path / "rb" / "fashion-mnist" / "Linf" / "tiny-quest.json").read_text())
    assert ROBUSTBENCH_LINF <= set(linf) <= ROBUSTBENCH_LINF | OPTIONAL
    assert linf["eps"] == "8/255" and isinstance(linf["autoattack_acc"], str)
    assert linf["unreliable"] is False and "at 8/255 on 2 test images; clean accuracy on 6" in linf["footnote"]
    assert linf["venue"] == "N/A" and linf["link"] == "N/A"
    # two corruptions are not RobustBench's grid of 15 x 5: no corruption files, and the notes say why
    assert not (tmp_path / "rb" / "fashion-mnist" / "corruptions").exists()
    err = capsys.readouterr().err
    assert "not one of RobustBench's datasets" in err and "corruptions left out: 71 of RobustBench's 75" in err
    with pytest.raises(SystemExit) as exc:
        main(["export", str(tmp_path / "res"), "--format", "csv", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "robustbench" in capsys.readouterr().err


def test_the_api_and_a_suite_agree_on_corruptions(tmp_path, tiny_pair):
    """The Python API takes the suites' defaults (the torch engine, "auto" constants) and a suite's seeded subset,
    so corruption_sweep gives a run's per-setting errors exactly, and corrupt() the images its models saw."""
    from questbench.config.settings import CorruptionSetting
    from questbench.config.suite import parse_suite
    from questbench.evaluators.corruptions import seen_images
    from questbench.run.runner import run_suite
    suite = parse_suite(f'registry = ["{tiny_pair}"]\nmodels = ["tiny-std", "tiny-quest"]\nnum_workers = 0\nseed = 3\n'
                        '[data]\nsamples = 12\n[corruptions]\nnames = ["fog", "gaussian_noise"]\n'
                        'severities = [2, 5]\n', "t.toml")
    assert suite.corruptions.engine == "torch" and suite.corruptions.params == "auto"  # the schema's defaults
    res = questbench.load_results(run_suite(suite, tmp_path / "o", device="cpu", quiet=True).out)
    ds = questbench.load_dataset("fashion-mnist", samples=12, seed=3)
    models = {m: questbench.load_model(m, registry_files=[tiny_pair]) for m in ("tiny-std", "tiny-quest")}
    errors = questbench.corruption_sweep(models, ds, ["fog", "gaussian_noise"], (2, 5), seed=3, num_workers=0,
                                         quiet=True)
    rows = res.samples[res.samples.evaluation == "corruption"]
    for (model, corruption, severity), g in rows.groupby(["model", "corruption", "severity"]):
        assert errors[model][corruption][(2, 5).index(int(severity))] == 1 - g.correct.mean()
    from questbench.data.arrays import ArrayDataset
    four = ArrayDataset(ds.images[:4], ds.labels[:4], "f", "f", ["0", "1", "2", "3"])  # corrupt() seeds by index
    seen = seen_images(four, range(4), CorruptionSetting("fog", 5), 3, engine="torch", params="auto")
    x = torch.stack([four[i][0] for i in range(4)])
    got = (questbench.corrupt(x, "fog", severity=5, seed=3) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert got.shape == (4, 32, 32, 3)
    for i in range(4):
        assert torch.equal(got[i], torch.from_numpy(seen[i]))
