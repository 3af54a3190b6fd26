"""The training parts one by one: schedule, optimiser groups, head, metrics, expert recorder, the
ImageNet-ViT initialisation of an AST, and the model a recipe builds."""
from __future__ import annotations

import math

import pytest
import torch

from surgeon.errors import SurgeonError
from surgeon.train.optim import build_optimizer, build_scheduler, lr_factor


def test_cosine_schedule_per_step_with_warmup():
    assert lr_factor(0, 100) == 1.0
    assert lr_factor(50, 100) == pytest.approx(0.5)
    assert lr_factor(100, 100) == pytest.approx(0.0)
    assert lr_factor(25, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert [lr_factor(s, 100, warmup=4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 100, warmup=4) == 1.0 and lr_factor(100, 100, warmup=4) == pytest.approx(0.0)
    assert lr_factor(70, 100, kind="constant") == 1.0


def test_optimizer_groups_and_scheduler():
    a, b, frozen = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), torch.nn.Linear(2, 2)
    frozen.requires_grad_(False)
    opt = build_optimizer({"method": list(a.parameters()), "backbone": list(frozen.parameters()),
                           "head": list(b.parameters())}, {"method": 5e-3, "backbone": 5e-5, "head": 1e-3})
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [("method", 5e-3), ("head", 1e-3)]
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6 and opt.defaults["weight_decay"] == 0.1
    sched = build_scheduler(opt, total_steps=4)
    lrs = []
    for _ in range(4):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([5e-3 * lr_factor(s, 4) for s in range(1, 5)])
    with pytest.raises(SurgeonError, match="nothing to train"):
        build_optimizer({"backbone": list(frozen.parameters())}, {"backbone": 1.0})


def test_confusion_tally_metrics():
    from surgeon.train.tasks import ConfusionTally

    tally = ConfusionTally(3)
    logits = torch.eye(3)[[0, 0, 1, 2, 2]]  # predictions 0 0 1 2 2
    tally.add(logits, {"labels": torch.tensor([0, 1, 1, 2, 2])}, loss=2.0)
    r = tally.result()
    assert r["accuracy"] == pytest.approx(4 / 5)
    # F1 per class: 0: p 1/2 r 1 -> 2/3; 1: p 1 r 1/2 -> 2/3; 2: 1
    assert r["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert r["loss"] == 2.0


@pytest.mark.parametrize("family", ["ast", "wav2vec2"])
def test_classification_head_fits_the_classes(family):
    from surgeon.tiny import build_tiny
    from surgeon.train.tasks import get_task

    task = get_task("classification")
    model = build_tiny(family, model_class=task.model_class(family))
    task.prepare(model, ["a", "b", "c", "d", "e", "f", "g"])
    assert model.config.num_labels == 7 and model.config.id2label[6] == "g"
    x = torch.randn(2, 100, 128) if family == "ast" else torch.randn(2, 4000)
    assert model(x).logits.shape == (2, 7)


def test_ast_from_imagenet_vit():
    from surgeon.tiny import build_tiny
    from surgeon.train.imagenet_init import ast_from_vit

    vit = build_tiny("vit", model_class="ViTModel", image_size=64)  # 4 x 4 patch grid
    ast = ast_from_vit(vit, max_length=200, frequency_stride=16, time_stride=16)
    v, a = vit.state_dict(), ast.audio_spectrogram_transformer.state_dict()
    assert torch.equal(a["layers.1.attention.q_proj.weight"], v["layers.1.attention.q_proj.weight"])
    assert torch.equal(a["layernorm.weight"], v["layernorm.weight"])
    assert torch.equal(a["embeddings.patch_embeddings.projection.weight"],
                       v["embeddings.patch_embeddings.projection.weight"].sum(1, keepdim=True))
    assert torch.equal(a["embeddings.distillation_token"], v["embeddings.cls_token"])
    pos = a["embeddings.position_embeddings"]
    assert pos.shape == (1, 2 + 8 * 12, 32)  # CLS, DIST + 8 frequency x 12 time patches
    assert torch.equal(pos[0, 0], v["embeddings.position_embeddings"][0, 0])
    assert (pos.abs().sum(-1) > 0).all()  # no position left at zero
    assert ast(torch.randn(1, 200, 128)).logits.shape[0] == 1


def test_expert_recorder():
    from surgeon.train.experts import ExpertRecorder

    class Fake(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.last_expert_weights = None

    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Module(), torch.nn.Module()])
    for layer in model.layers:
        layer.surgeon_soft_moa = Fake()
    rec = ExpertRecorder(model, num_labels=2)
    assert rec.names == ["layer 0", "layer 1"]
    model.layers[0].surgeon_soft_moa.last_expert_weights = torch.tensor([[0.75, 0.25], [0.25, 0.75]])
    model.layers[1].surgeon_soft_moa.last_expert_weights = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    rec.add(torch.tensor([0, 1]))
    r = rec.result()
    assert r["per_layer"] == [[0.5, 0.5], [0.75, 0.25]]
    assert r["per_class"][0] == [[0.75, 0.25], [0.25, 0.75]]


def test_recipe_model_positions_follow_max_frames(monkeypatch):
    import surgeon.tiny
    from surgeon.recipes.load import load_recipe
    from surgeon.train.model import build_model
    from surgeon.train.runs import feature_spec

    build = surgeon.tiny.build_tiny

    def pretrained_like(*args, **kwargs):  # transformers initialises the table to zeros: fill it
        model = build(*args, **kwargs)
        torch.nn.init.normal_(model.audio_spectrogram_transformer.embeddings.position_embeddings)
        return model

    monkeypatch.setattr(surgeon.tiny, "build_tiny", pretrained_like)
    r = load_recipe("quickstart", ["data.max_frames=300"])
    model, spec, _ = build_model(r, ["a", "b"], feature_spec=lambda m: feature_spec(r, m))
    assert spec.max_frames == 300 and model.config.max_length == 300
    pos = model.audio_spectrogram_transformer.embeddings.position_embeddings
    assert pos.shape[1] == 2 + 12 * 29 and (pos.abs().sum(-1) > 0).all()
    assert model(torch.randn(1, 300, 128)).logits.shape == (1, 2)


def test_merge_table_defaults():
    from surgeon.recipes.load import load_recipe

    r = load_recipe("quickstart", ['merge={source = "bert", learnable = true}'])
    assert r.merge.init_lam == 0.1 and r.merge.layers == "all" and r.merge.learnable is True


class _BadFile(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise SurgeonError("clip.wav: audio file not found")


@pytest.mark.parametrize("workers", [0, 1])
def test_worker_error_reaches_the_user_as_its_one_line_message(workers):
    from surgeon.train.loop import batches

    loader = torch.utils.data.DataLoader(_BadFile(), batch_size=1, num_workers=workers)
    with pytest.raises(SurgeonError) as e:
        list(batches(loader))
    assert str(e.value) == "clip.wav: audio file not found"


def test_gathered_tallies_equal_one_tally_over_everything():
    """Sharded evaluation: tallies (and expert counts) of two shards, sent between processes as
    pickles and merged, give the metrics of one tally over all items; the JSON state round-trips."""
    import json
    import pickle

    from surgeon.train.experts import ExpertRecorder
    from surgeon.train.tasks import ConfusionTally

    torch.manual_seed(0)
    logits, labels = torch.randn(10, 3), torch.randint(0, 3, (10,))
    whole = ConfusionTally(3)
    whole.add(logits, {"labels": labels}, loss=1.0)
    parts = [ConfusionTally(3), ConfusionTally(3)]
    parts[0].add(logits[0::2], {"labels": labels[0::2]}, loss=1.0)
    parts[1].add(logits[1::2], {"labels": labels[1::2]}, loss=1.0)
    merged = pickle.loads(pickle.dumps(parts[0]))
    merged.merge(pickle.loads(pickle.dumps(parts[1])))
    assert merged.result() == whole.result()
    restored = ConfusionTally(3)
    restored.load_state_dict(json.loads(json.dumps(whole.state_dict())))
    assert restored.result() == whole.result()

    class Fake(torch.nn.Module):
        last_expert_weights = None

    model = torch.nn.Module()
    model.surgeon_soft_moa = Fake()
    weights = torch.softmax(torch.randn(10, 4), -1)
    recorders = [ExpertRecorder(model, 3) for _ in range(3)]
    for rec, rows in zip(recorders, [slice(None), slice(0, None, 2), slice(1, None, 2)]):
        model.surgeon_soft_moa.last_expert_weights = weights[rows]
        rec.add(labels[rows])
    one, a, b = recorders
    a = pickle.loads(pickle.dumps(a))  # what crosses between processes: counts, not the model
    assert a.modules == []
    a.merge(pickle.loads(pickle.dumps(b)))
    for x, y in zip(a.result()["per_class"], one.result()["per_class"]):
        assert torch.allclose(torch.tensor(x), torch.tensor(y))
    assert torch.allclose(torch.tensor(a.result()["per_layer"]), torch.tensor(one.result()["per_layer"]))
