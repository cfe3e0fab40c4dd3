"""A run whose config.yaml was edited after training (another method, another backbone width) and
then resumed or evaluated: a clear error naming the key to restore, and nothing trained is lost."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import selfsup
from selfsup.cli import main
from selfsup.config import ConfigError, load_run_config
from selfsup.eval.run import load_run
from selfsup.train import fit, resume
from selfsup.checkpoint import CheckpointError, load_weights


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config) -> Path:
    run = tmp_path_factory.mktemp("edited") / "run"
    fit(tiny_config("simclr", "train.max_steps=2"), run, progress_bar=False)
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def edit(run: Path, section: str, key: str, value) -> None:
    path = run / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg[section][key] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted((run / "checkpoints").rglob("*")) if p.is_file()}


def test_another_backbone_width_names_the_key_to_restore_for_resume_and_eval(run):
    before = snapshot(run)
    edit(run, "backbone", "width", 0.5)
    for attempt in (lambda: resume(run, progress_bar=False), lambda: load_run(run)):
        with pytest.raises(ConfigError) as e:
            attempt()
        msg = str(e.value)
        assert f"{run / 'config.yaml'} says backbone.width=0.5" in msg
        assert "was trained with backbone.width=0.25" in msg and "backbone: {width: 0.25}" in msg
        assert "--out" in msg  # how to try the new width instead: a new run
    assert snapshot(run) == before  # the checkpoint is untouched
    edit(run, "backbone", "width", 0.25)  # restored: evaluation loads the trained weights again
    _, method, _ = load_run(run)
    saved = load_file(run / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in method.state_dict().items())


def test_meta_holds_the_backbone_as_fields_and_older_strings_are_still_compared(run):
    import json

    meta_path = run / "checkpoints" / "last" / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["backbone"]["name"] == "convnet" and meta["backbone"]["width"] == 0.25
    # checkpoints written before the backbone became a dict say it as one string
    b = meta["backbone"]
    meta["backbone"] = f"{b['name']}(" + ", ".join(f"{k}={v}" for k, v in b.items() if k != "name") + ")"
    meta_path.write_text(json.dumps(meta))
    load_run_config(run)  # unchanged config: no error
    edit(run, "backbone", "width", 0.5)
    with pytest.raises(ConfigError, match=r"says backbone.width=0.5.*trained with backbone.width=0.25"):
        load_run_config(run)


def test_another_method_names_the_method_to_restore(run):
    edit(run, "method", "name", "byol")
    with pytest.raises(ConfigError) as e:
        load_run_config(run)
    assert "says method.name=byol" in str(e.value) and "trained with method.name=simclr" in str(e.value)
    assert "method: {name: simclr}" in str(e.value)


def test_eval_cli_on_an_edited_run_is_a_one_line_error(run):
    before = snapshot(run)
    edit(run, "backbone", "name", "resnet10")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["eval", "knn", str(run)])
    assert rc == 2 and err.getvalue().startswith("selfsup: error: ") and "Traceback" not in err.getvalue()
    assert "backbone.name=resnet10" in err.getvalue() and "backbone.name=convnet" in err.getvalue()
    assert snapshot(run) == before and not (run / "eval_knn.json").exists()


def test_weights_of_another_width_name_the_checkpoint_backbone(run):
    """Below the config check: load_weights itself refuses tensors of another shape, naming what the
    checkpoint was made with."""
    wider = selfsup.create_method("simclr", backbone="convnet", in_channels=1, width=0.5)
    with pytest.raises(CheckpointError) as e:
        load_weights(run / "checkpoints" / "last", wider)
    assert "does not fit" in str(e.value) and "convnet(width=0.25" in str(e.value)


def test_a_vit_patch_size_edit_is_named_before_any_weights_are_read(tmp_path, tiny_config):
    import json

    from selfsup.config import save_config
    from selfsup.train.loop import checkpoint_meta

    cfg = tiny_config("simclr", "backbone.name=vit_micro", "backbone.width=1.0", "backbone.patch_size=4")
    save_config(cfg, tmp_path / "config.yaml")
    (tmp_path / "checkpoints" / "last").mkdir(parents=True)
    (tmp_path / "checkpoints" / "last" / "meta.json").write_text(json.dumps(checkpoint_meta(cfg, step=1)))
    load_run_config(tmp_path)  # unedited: fine
    edit(tmp_path, "backbone", "patch_size", 2)
    with pytest.raises(ConfigError, match=r"says backbone.patch_size=2.*trained with backbone.patch_size=4"):
        load_run_config(tmp_path)
