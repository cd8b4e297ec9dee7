"""Weights: save/load, embedded/local/Hub resolution (offline, from a cache built here), CLI.

Nothing here touches the network: every test runs with HF_HUB_OFFLINE=1 and a private HF cache
under tmp_path, except the one that simulates a failing network by making the Hub call raise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from napari_voxrecon import weights as W
from napari_voxrecon.errors import VoxreconError
from napari_voxrecon.weights_cli import add_weights_parser

METHOD = "sparse3diff"
COMMIT_MAIN = "a" * 40
COMMIT_V2 = "b" * 40


def _config(method: str = METHOD, **extra) -> dict:
    return {"method": method, "task": "sparse", "architecture": {"channels": 8, "depth": 2}, **extra}


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(8, 1, 3, 3, 3, generator=g),
        "conv.bias": torch.randn(8, generator=g) * 10,
        "steps": torch.arange(5, dtype=torch.int64),
    }


@pytest.fixture(autouse=True)
def offline_hub(tmp_path, monkeypatch):
    """A private, empty HF cache and offline mode for every test.

    huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE once at import, so its constants are
    patched too (its HTTP layer checks constants.HF_HUB_OFFLINE on every request).
    """
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # No embedded weights unless a test adds some.
    monkeypatch.setattr(W, "EMBEDDED_ROOT", tmp_path / "embedded")
    return cache


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def make_hub_cache(cache: Path, repo_id: str, snapshots: dict[str, tuple[str, dict[str, bytes]]]) -> Path:
    """Write the real huggingface_hub cache layout, as snapshot_download would leave it:

    models--org--name/blobs/<hash>, snapshots/<commit>/<file> -> ../../blobs/<hash> (relative
    symlinks), refs/<ref> holding the commit.  ``snapshots``: ref -> (commit, files).
    """
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    for ref, (commit, files) in snapshots.items():
        snap = repo_dir / "snapshots" / commit
        snap.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = snap / name
            if not link.exists():
                link.symlink_to(os.path.relpath(blob, link.parent))
        ref_path = repo_dir / "refs" / ref
        ref_path.parent.mkdir(parents=True, exist_ok=True)
        ref_path.write_text(commit)
    return repo_dir


@pytest.fixture
def cached_repo(tmp_path, offline_hub):
    """org/sparse-weights cached at main (seed 0) and at tag v2 (seed 1)."""
    main = W.save_weights(tmp_path / "src-main", _state(0), _config(), card="# main card\n")
    v2 = W.save_weights(tmp_path / "src-v2", _state(1), _config(), card="# v2 card\n")
    return make_hub_cache(
        offline_hub,
        "org/sparse-weights",
        {"main": (COMMIT_MAIN, _folder_bytes(main)), "v2": (COMMIT_V2, _folder_bytes(v2))},
    )


@pytest.fixture
def embedded(tmp_path):
    root = W.EMBEDDED_ROOT
    W.save_weights(root / "sparse-small", _state(2), _config())
    W.save_weights(root / "sparse-big", _state(3), _config(default=True))
    W.save_weights(root / "restore-a", _state(4), _config("restore3d", task="restore"))
    return root


# ---------------------------------------------------------------------------- save / load


def test_save_load_roundtrip(tmp_path):
    from safetensors import safe_open

    sd = _state()
    folder = W.save_weights(tmp_path / "w", sd, _config(), card="# card\n")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    # Nothing left beside it: the temporary folder was renamed into place.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor("conv.weight").dtype == torch.float16
        assert f.get_tensor("steps").dtype == torch.int64
    cfg_on_disk = json.loads((folder / "config.json").read_text())
    assert cfg_on_disk["format_version"] == 1 and cfg_on_disk["method"] == METHOD

    state, config, where = W.load_weights(str(folder), METHOD)
    assert where == folder.resolve()
    assert config["architecture"] == {"channels": 8, "depth": 2}
    assert state["conv.weight"].dtype == torch.float32
    torch.testing.assert_close(state["conv.weight"], sd["conv.weight"], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(state["conv.bias"], sd["conv.bias"], rtol=1e-3, atol=1e-2)
    assert state["steps"].dtype == torch.int64 and torch.equal(state["steps"], sd["steps"])
    assert (folder / "README.md").read_text() == "# card\n"


def test_save_makes_default_card_and_rejects_bad_input(tmp_path):
    folder = W.save_weights(tmp_path / "w", _state(), _config())
    assert METHOD in (folder / "README.md").read_text()
    with pytest.raises(VoxreconError, match="method"):
        W.save_weights(tmp_path / "x", _state(), {"task": "sparse", "architecture": {}})
    with pytest.raises(VoxreconError, match="fp16 range"):
        W.save_weights(tmp_path / "y", {"w": torch.tensor([1e6])}, _config())
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_save_refuses_overwrite(tmp_path):
    folder = W.save_weights(tmp_path / "w", _state(0), _config())
    with pytest.raises(VoxreconError, match="overwrite"):
        W.save_weights(folder, _state(1), _config())
    # The refused call changed nothing.
    torch.testing.assert_close(W.load_weights(folder, METHOD)[0]["conv.weight"], _state(0)["conv.weight"], atol=1e-3, rtol=1e-3)
    W.save_weights(folder, _state(1), _config(), overwrite=True)
    torch.testing.assert_close(W.load_weights(folder, METHOD)[0]["conv.weight"], _state(1)["conv.weight"], atol=1e-3, rtol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no backup/temp folder left
    # An existing empty folder is fine.
    (tmp_path / "empty").mkdir()
    W.save_weights(tmp_path / "empty", _state(), _config())


def test_save_crash_leaves_no_half_written_folder(tmp_path, monkeypatch):
    import safetensors.torch

    old = W.save_weights(tmp_path / "old", _state(0), _config())
    before = _folder_bytes(old)

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        W.save_weights(tmp_path / "new", _state(), _config())
    with pytest.raises(OSError, match="disk full"):
        W.save_weights(old, _state(1), _config(), overwrite=True)
    assert not (tmp_path / "new").exists()
    assert _folder_bytes(old) == before  # the previous weights survive a failed overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_save_crash_during_swap_keeps_old_weights(tmp_path, monkeypatch):
    old = W.save_weights(tmp_path / "old", _state(0), _config())
    before = _folder_bytes(old)
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).name.startswith(".old.tmp-"):  # the new folder moving into place
            raise OSError("crash during rename (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="crash during rename"):
        W.save_weights(old, _state(1), _config(), overwrite=True)
    assert _folder_bytes(old) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


# ---------------------------------------------------------------------------- embedded / local


def test_embedded_resolution(embedded):
    assert W.embedded_names() == ["restore-a", "sparse-big", "sparse-small"]
    assert W.default_weights(METHOD) == embedded / "sparse-big"  # marked default among two
    assert W.default_weights("restore3d") == embedded / "restore-a"  # the only one
    for spec in (None, "", "default", "  default "):
        assert W.resolve_weights(spec, METHOD) == embedded / "sparse-big"
    assert W.resolve_weights("sparse-small", METHOD) == embedded / "sparse-small"
    state, config, _ = W.load_weights("restore-a", "restore3d")
    torch.testing.assert_close(state["conv.weight"], _state(4)["conv.weight"], atol=1e-3, rtol=1e-3)
    with pytest.raises(VoxreconError, match="no embedded default") as err:
        W.resolve_weights(None, "projection-unet")
    assert "--weights" in str(err.value)
    with pytest.raises(VoxreconError, match="made for method 'restore3d', not 'sparse3diff'"):
        W.resolve_weights("restore-a", METHOD)


def test_no_embedded_folder_is_handled(tmp_path):
    assert not W.EMBEDDED_ROOT.exists()
    assert W.embedded_names() == [] and W.list_weights() == []
    with pytest.raises(VoxreconError, match="no embedded default"):
        W.default_weights(METHOD)
    W.EMBEDDED_ROOT.mkdir()
    (W.EMBEDDED_ROOT / "half-copied").mkdir()  # no config: not counted
    assert W.embedded_names() == []


def test_ambiguous_embedded_default(embedded):
    cfg = json.loads((embedded / "sparse-small" / "config.json").read_text())
    cfg["default"] = True
    (embedded / "sparse-small" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VoxreconError, match="ambiguous"):
        W.default_weights(METHOD)


def test_local_folder_and_method_mismatch(tmp_path):
    folder = W.save_weights(tmp_path / "mine", _state(), _config())
    assert W.resolve_weights(str(folder), METHOD) == folder.resolve()
    assert W.resolve_weights(folder, METHOD) == folder.resolve()  # a Path works too
    with pytest.raises(VoxreconError) as err:
        W.resolve_weights(str(folder), "restore3d")
    assert "'sparse3diff'" in str(err.value) and "'restore3d'" in str(err.value)
    with pytest.raises(VoxreconError, match="is a file"):
        W.resolve_weights(str(folder / "config.json"), METHOD)


def test_pickled_weights_are_refused(tmp_path, monkeypatch):
    def no_unpickling(*args, **kwargs):  # proves the refusal happens before any load
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(_state(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({**_config(), "format_version": 1}))
    with pytest.raises(VoxreconError, match="pickled weights are refused for safety") as err:
        W.load_weights(str(folder), METHOD)
    assert "save_weights" in str(err.value)  # says how to convert
    with pytest.raises(VoxreconError, match="refused for safety"):
        W.resolve_weights(str(folder / "pytorch_model.bin"), METHOD)


def test_missing_or_bad_config(tmp_path):
    folder = W.save_weights(tmp_path / "w", _state(), _config())
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(VoxreconError, match="upgrade"):
        W.resolve_weights(str(folder), METHOD)
    (folder / "config.json").unlink()
    with pytest.raises(VoxreconError, match="no config.json"):
        W.resolve_weights(str(folder), METHOD)


def test_unknown_name_lists_choices(embedded):
    with pytest.raises(VoxreconError) as err:
        W.resolve_weights("nonexistent-name", METHOD)
    msg = str(err.value)
    for name in ("sparse-big", "sparse-small", "restore-a", "org/name@revision", "local folder"):
        assert name in msg
    with pytest.raises(VoxreconError, match="no folder './nope'"):
        W.resolve_weights("./nope", METHOD)


def test_parse_hub_spec():
    assert W.parse_hub_spec("org/name") == ("org/name", None)
    assert W.parse_hub_spec("org/name@v1.2") == ("org/name", "v1.2")
    assert W.parse_hub_spec("org/name@refs/pr/3") == ("org/name", "refs/pr/3")
    for bad in ("name", "org/na--me", "./x/y", "org/name@", "a/b/c", "org/name@x@y"):
        assert W.parse_hub_spec(bad) is None, bad


# ---------------------------------------------------------------------------- Hub, offline


def test_cache_layout_is_what_huggingface_hub_reads(cached_repo, offline_hub):
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(offline_hub)
    assert not info.warnings
    (repo,) = info.repos
    assert repo.repo_id == "org/sparse-weights" and repo.repo_type == "model"
    refs = {rev.commit_hash: set(rev.refs) for rev in repo.revisions}
    assert refs == {COMMIT_MAIN: {"main"}, COMMIT_V2: {"v2"}}


def test_hub_id_resolves_offline_from_cache(cached_repo, monkeypatch):
    from huggingface_hub import HfApi

    def no_network(*args, **kwargs):
        raise AssertionError("no Hub call may happen offline")

    monkeypatch.setattr(HfApi, "repo_info", no_network)
    main = W.resolve_weights("org/sparse-weights", METHOD)
    assert main == cached_repo / "snapshots" / COMMIT_MAIN
    v2 = W.resolve_weights("org/sparse-weights@v2", METHOD, progress=False)
    assert v2 == cached_repo / "snapshots" / COMMIT_V2
    assert W.resolve_weights(f"org/sparse-weights@{COMMIT_V2}", METHOD) == v2

    s_main, cfg, _ = W.load_weights("org/sparse-weights", METHOD)
    s_v2, _, _ = W.load_weights("org/sparse-weights@v2", METHOD)
    torch.testing.assert_close(s_main["conv.weight"], _state(0)["conv.weight"], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(s_v2["conv.weight"], _state(1)["conv.weight"], atol=1e-3, rtol=1e-3)
    assert cfg["method"] == METHOD
    with pytest.raises(VoxreconError, match="not 'restore3d'"):
        W.resolve_weights("org/sparse-weights", "restore3d")


def test_hub_repo_not_cached_says_what_to_do(cached_repo):
    for spec in ("org/other-weights", "org/sparse-weights@v9"):
        with pytest.raises(VoxreconError) as err:
            W.resolve_weights(spec, METHOD)
        msg = str(err.value)
        assert "not in the local Hugging Face cache" in msg and "no network" in msg
        assert f"voxrecon weights pull {spec}" in msg and "local weights folder" in msg
        assert "HF_HUB_OFFLINE" in msg


def test_network_failure_falls_back_to_cache(cached_repo, monkeypatch):
    from huggingface_hub import HfApi, constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []

    def broken_network(self, *args, **kwargs):
        calls.append(args)
        raise ConnectionError("network is unreachable (simulated)")

    monkeypatch.setattr(HfApi, "repo_info", broken_network)
    assert W.resolve_weights("org/sparse-weights@v2", METHOD) == cached_repo / "snapshots" / COMMIT_V2
    assert calls  # it did try the Hub first
    with pytest.raises(VoxreconError, match="not in the local Hugging Face cache.*no network"):
        W.resolve_weights("org/missing", METHOD)


def test_hub_repo_with_only_pickles_is_refused(tmp_path, offline_hub):
    cfg = json.dumps({**_config(), "format_version": 1}).encode()
    make_hub_cache(offline_hub, "org/pickled", {"main": ("c" * 40, {"config.json": cfg, "pytorch_model.bin": b"x"})})
    with pytest.raises(VoxreconError, match="refused for safety"):
        W.resolve_weights("org/pickled", METHOD)


def test_pull_and_push_need_network(tmp_path):
    with pytest.raises(VoxreconError, match="HF_HUB_OFFLINE"):
        W.pull_weights("org/sparse-weights")
    with pytest.raises(VoxreconError, match="not a Hub repo id"):
        W.pull_weights("nonsense")
    folder = W.save_weights(tmp_path / "w", _state(), _config())
    with pytest.raises(VoxreconError, match="HF_HUB_OFFLINE"):
        W.push_weights(folder, "org/new")
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(VoxreconError, match="no model.safetensors"):  # validated before any upload
        W.push_weights(bad, "org/new")


def test_push_calls_hub_api(tmp_path, monkeypatch):
    from huggingface_hub import HfApi, constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("create", (repo_id, kw)) and "https://hub/org/new")
    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, **kw: calls.setdefault("branch", (repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.setdefault("upload", kw) and None)
    folder = W.save_weights(tmp_path / "w", _state(), _config())
    W.push_weights(folder, "org/new", private=True, revision="v2")
    assert calls["create"] == ("org/new", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["branch"][1]["branch"] == "v2"
    assert calls["upload"]["folder_path"] == str(folder) and calls["upload"]["revision"] == "v2"
    assert set(calls["upload"]["allow_patterns"]) == {"model.safetensors", "config.json", "README.md"}

    from huggingface_hub.utils import LocalTokenNotFoundError

    def no_token(self, *a, **kw):
        raise LocalTokenNotFoundError("Token is required")

    monkeypatch.setattr(HfApi, "create_repo", no_token)
    with pytest.raises(VoxreconError, match="hf auth login"):
        W.push_weights(folder, "org/new")


# ---------------------------------------------------------------------------- list / CLI


def test_list_weights_finds_embedded_and_cached(embedded, cached_repo, offline_hub):
    # A non-voxrecon model in the cache must not be listed.
    make_hub_cache(offline_hub, "other/bert", {"main": ("d" * 40, {"config.json": b'{"model_type": "bert"}'})})
    entries = W.list_weights()
    by_name = {e["name"]: e for e in entries}
    assert set(by_name) == {"restore-a", "sparse-big", "sparse-small", "org/sparse-weights", "org/sparse-weights@v2"}
    assert by_name["sparse-big"]["default"] and not by_name["sparse-small"]["default"]
    assert by_name["restore-a"]["default"] and by_name["restore-a"]["method"] == "restore3d"
    assert by_name["org/sparse-weights"]["source"] == "hub-cache"
    assert by_name["org/sparse-weights@v2"]["revision"] == COMMIT_V2
    assert all(e["size"] > 0 for e in entries)
    # Every listed name resolves back to its folder.
    for e in entries:
        assert W.resolve_weights(e["name"], e["method"]).resolve() == Path(e["path"]).resolve()


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="voxrecon")
    add_weights_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_weights_list_json_and_table(embedded, cached_repo, capsys):
    assert _cli(["weights", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {e["name"] for e in listed} >= {"sparse-big", "org/sparse-weights@v2"}
    assert _cli(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("NAME") and "org/sparse-weights@v2" in out and "hub-cache" in out


def test_cli_weights_info_pull_push(embedded, cached_repo, tmp_path, capsys):
    assert _cli(["weights", "info", "org/sparse-weights@v2", "--method", METHOD]) == 0
    out = capsys.readouterr().out
    assert '"method": "sparse3diff"' in out and "# v2 card" in out and "tensors:    3" in out
    assert _cli(["weights", "info", "default", "--method", METHOD, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"].endswith("sparse-big")
    with pytest.raises(VoxreconError, match="--method"):
        _cli(["weights", "info", "default"])
    with pytest.raises(VoxreconError, match="HF_HUB_OFFLINE"):
        _cli(["weights", "pull", "org/sparse-weights@v2"])
    folder = W.save_weights(tmp_path / "w", _state(), _config())
    with pytest.raises(VoxreconError, match="HF_HUB_OFFLINE"):
        _cli(["weights", "push", str(folder), "org/new", "--private"])
    with pytest.raises(SystemExit):
        _cli(["weights"])  # a subcommand is required
