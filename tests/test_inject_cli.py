"""`surgeon inject` and `surgeon strip` on the command line: outputs, JSON, and bad input (one line,
exit 2, nothing written)."""
import json

import pytest
import torch


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_inject_json_and_adapter_layout(cli, tiny_dir, tmp_path):
    base = tiny_dir("ast")
    r = cli("inject", "bottleneck", "--model", base, "--out", tmp_path / "a", "--placement", "houlsby",
            "--bottleneck", "4", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert {"method", "added_parameters", "petl_parameters", "trainable_parameters", "out"} <= doc.keys()
    # 2 layers x 2 sub-layers x (Linear(32,4) + Linear(4,32)) ; + 2 x 2 LayerNorms of 64
    assert doc["method"] == "bottleneck"
    assert doc["added_parameters"] == 2 * 2 * (32 * 4 + 4 + 4 * 32 + 32)
    assert doc["petl_parameters"] == doc["added_parameters"] + 2 * 2 * 64
    head = 64 + 32 * 5 + 5  # ASTMLPHead: LayerNorm + Linear(32, 5)
    assert doc["trainable_parameters"] == doc["petl_parameters"] + head
    assert doc["out"] == str(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["README.md", "adapter.safetensors", "surgery.json"]
    record = json.loads((tmp_path / "a" / "surgery.json").read_text())
    assert record["format"] == "surgeon-surgery/1" and record["key_scheme"] == "memory"
    assert record["base"]["family"] == "ast" and record["base"]["fingerprint"].startswith("sha256:")
    opts = record["methods"][0]["options"]
    assert opts["residual"] is False and opts["placement"] == "houlsby" and opts["bottleneck"] == 4


def test_inject_full_then_inspect_and_strip(cli, tiny_dir, tmp_path):
    base = tiny_dir("hubert")
    r = cli("inject", "lora", "--model", base, "--out", tmp_path / "full", "--full", "--rank", "2",
            "--targets", "q,k", "--json")
    assert r.code == 0, r.err
    assert (tmp_path / "full" / "config.json").is_file() and (tmp_path / "full" / "surgery.json").is_file()
    r = cli("inspect", tmp_path / "full", "--json")
    assert r.code == 0, r.err
    [entry] = r.json()["surgery"]
    assert entry["method"] == "lora" and entry["num_parameters"] == 2 * 2 * (2 * 32 + 32 * 2)
    r = cli("strip", tmp_path / "full", "--out", tmp_path / "stripped")
    assert r.code == 0, r.err
    from surgeon.io.checkpoint import Checkpoint

    a, b = Checkpoint.open(tmp_path / "stripped"), Checkpoint.open(base)
    assert sorted(a.keys()) == sorted(b.keys())
    assert all(torch.equal(a.get(k), b.get(k)) for k in a.keys())


def test_inspect_adapter_only_directory(cli, tiny_dir, tmp_path):
    assert cli("inject", "soft-moa", "--model", tiny_dir("vit"), "--out", tmp_path / "a", "--num-experts", "3").code == 0
    r = cli("inspect", tmp_path / "a", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["family"] == "vit" and doc["num_layers"] == 2
    assert doc["surgery"][0]["method"] == "soft-moa"
    assert doc["surgery_base"]["path"] == str(tiny_dir("vit").resolve())


@pytest.mark.parametrize("method", ["soft-moa", "dense-moa"])
def test_inject_json_says_the_experts_per_block(cli, tiny_dir, tmp_path, method):
    """`num_experts` is per MoA block; Houlsby has two blocks per layer and defaults to the paper's 7 + 7."""
    r = cli("inject", method, "--model", tiny_dir("vit"), "--out", tmp_path / "h", "--placement", "houlsby", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["options"]["num_experts"] == 7
    assert (doc["experts_per_block"], doc["blocks_per_layer"], doc["experts_per_layer"]) == (7, 2, 14)
    r = cli("inject", method, "--model", tiny_dir("vit"), "--out", tmp_path / "p", "--json")
    assert (r.json()["experts_per_block"], r.json()["blocks_per_layer"]) == (14, 1)


def test_strip_adapter_gives_back_its_base(cli, tiny_dir, tmp_path):
    base = tiny_dir("wav2vec2")
    assert cli("inject", "conformer", "--model", base, "--out", tmp_path / "a", "--kernel", "5").code == 0
    r = cli("strip", tmp_path / "a", "--out", tmp_path / "b")
    assert r.code == 0, r.err
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == (base / "model.safetensors").read_bytes()
    assert (tmp_path / "b" / "config.json").read_bytes() == (base / "config.json").read_bytes()


def test_inject_on_top_of_an_adapter(cli, tiny_dir, tmp_path):
    import surgeon

    base = tiny_dir("ast")
    assert cli("inject", "bottleneck", "--model", base, "--out", tmp_path / "a", "--location", "ffn").code == 0
    assert cli("inject", "lora", "--model", tmp_path / "a", "--out", tmp_path / "b").code == 0
    model = surgeon.load(tmp_path / "b")
    from surgeon.api import surgery

    assert [m["method"] for m in surgery(model)["methods"]] == ["bottleneck", "lora"]
    assert surgery(model)["base"]["path"] == str(base.resolve())


def test_booleans_are_real(cli, tiny_dir, tmp_path):
    r = cli("inject", "bottleneck", "--model", tiny_dir("ast"), "--out", tmp_path / "a", "--insertion", "sequential",
            "--no-residual", "--json")
    assert r.code == 0, r.err
    assert r.json()["options"]["residual"] is False
    r = cli("inject", "bottleneck", "--model", tiny_dir("ast"), "--out", tmp_path / "b", "--residual", "False")
    assert r.code == 2 and not (tmp_path / "b").exists()


def _refused(r, out, *fragments):
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    for f in fragments:
        assert f in lines[0], lines[0]
    assert not out.exists()


def test_bad_options_are_refused_with_nothing_written(cli, tiny_dir, tmp_path):
    base = tiny_dir("ast")
    out = tmp_path / "x"
    _refused(cli("inject", "lorra", "--model", base, "--out", out), out, "unknown method", "did you mean 'lora'")
    _refused(cli("inject", "lora", "--model", base, "--out", out, "--rank", "33"), out, "rank 33", "hidden size 32")
    _refused(cli("inject", "bottleneck", "--model", base, "--out", out, "--bottleneck", "64"), out, "hidden size 32")
    _refused(cli("inject", "loaa", "--model", base, "--out", out), out, "overlap", "--repatch")
    _refused(cli("inject", "bitfit", "--model", base, "--out", out, "--rank", "2"), out, "--rank: bitfit does not take this option")
    _refused(cli("inject", "bottleneck", "--model", base, "--out", out, "--placement", "pfiefer"), out, "placement")
    _refused(cli("inject", "prefix", "--model", base, "--out", out, "--num-tokens", "3"), out, "even")
    _refused(cli("inject", "bottleneck", "--model", base, "--out", out, "--placement", "houlsby", "--location",
                 "ffn"), out, "Pfeiffer")
    # a reduction given beside the width is still checked (LoRA divides by it), and so is a MoA expert's kernel
    _refused(cli("inject", "lora", "--model", base, "--out", out, "--rank", "2", "--reduction", "0"), out,
             "reduction must be a positive number")
    _refused(cli("inject", "lora", "--model", base, "--out", out, "--reduction", "nan"), out, "reduction")
    _refused(cli("inject", "dense-moa", "--model", base, "--out", out, "--expert", "convpass", "--kernel", "0"), out,
             "kernel must be a positive integer")


def test_injecting_a_carried_method_is_refused(cli, tiny_dir, tmp_path):
    assert cli("inject", "lora", "--model", tiny_dir("ast"), "--out", tmp_path / "a").code == 0
    out = tmp_path / "b"
    _refused(cli("inject", "lora", "--model", tmp_path / "a", "--out", out), out, "already carries")


def test_fingerprint_mismatch_is_refused(cli, tiny_dir, tmp_path):
    assert cli("inject", "lora", "--model", tiny_dir("ast"), "--out", tmp_path / "a").code == 0
    other = tiny_dir("ast", seed=1)
    out = tmp_path / "b"
    _refused(cli("inject", "bitfit", "--model", tmp_path / "a", "--base", other, "--out", out), out, "fingerprint")
    _refused(cli("strip", tmp_path / "a", "--base", other, "--out", out), out, "fingerprint")
    import surgeon
    from surgeon.errors import SurgeonError

    with pytest.raises(SurgeonError, match="fingerprint"):
        surgeon.load(tmp_path / "a", base=other)


def test_strip_with_nothing_to_strip(cli, tiny_dir, tmp_path):
    out = tmp_path / "x"
    _refused(cli("strip", tiny_dir("ast"), "--out", out), out, "nothing to strip")


def test_existing_output_needs_force(cli, tiny_dir, tmp_path):
    out = tmp_path / "a"
    out.mkdir()
    _refused_existing = cli("inject", "lora", "--model", tiny_dir("ast"), "--out", out)
    assert _refused_existing.code == 2 and "--force" in _refused_existing.err and not any(out.iterdir())
    assert cli("inject", "lora", "--model", tiny_dir("ast"), "--out", out, "--force").code == 0


def test_help_lists_both_commands_without_heavy_imports():
    import subprocess
    import sys

    code = ("import sys; from surgeon_cli.main import app; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_every_method_option_is_in_the_cli_and_the_recipe_schema():
    """Issue 16 item 7: the Opt tables (surgeon.methods.tables) are the single source: each option a
    method declares is a CLI option and a recipe [method] key, with the same choices and bounds, and
    nothing else is."""
    import typing

    import typer

    from surgeon.methods import METHOD_NAMES, get_method
    from surgeon.methods.tables import OPTIONS, all_options
    from surgeon.recipes.schema import MethodSection
    from surgeon_cli.main import app

    fields = MethodSection.model_fields
    cli_names = {p.name for p in typer.main.get_command(app).commands["inject"].params}
    assert set(fields) - {"name"} == set(all_options()) <= cli_names
    for name in METHOD_NAMES:
        assert dict(get_method(name).OPTIONS) == OPTIONS[name], name  # the method reads the table
        for option, opt in OPTIONS[name].items():
            if opt.choices and opt.kind == "str":
                literal = [a for a in typing.get_args(fields[option].annotation) if typing.get_args(a)]
                assert literal and set(typing.get_args(literal[0])) == set(opt.choices), (name, option)
    for option, entries in all_options().items():  # methods sharing an option agree on what it is
        assert len({(o.kind, o.choices, o.ge, o.gt, o.pattern, o.flags) for _, o in entries}) == 1, option


def test_method_tables_match_the_placement_forms():
    from surgeon.methods.placement import SEQUENTIAL_BEFORE
    from surgeon.methods.tables import SEQUENTIAL_BEFORE_FORMS

    assert tuple(SEQUENTIAL_BEFORE) == SEQUENTIAL_BEFORE_FORMS


def test_an_option_the_method_does_not_take_is_named_as_typed(cli, tiny_dir, tmp_path):
    """Issue 15 item 6: kebab-case on the command line, kebab-case in the error."""
    r = cli("inject", "lora", "--model", tiny_dir("ast"), "--out", tmp_path / "x", "--num-experts", "3")
    assert r.code == 2 and "--num-experts: lora does not take this option" in r.err and "num_experts" not in r.err
    assert not (tmp_path / "x").exists()
