"""Model weights: embedded in the package, in a local folder, or on the Hugging Face Hub.

A *weights folder* holds

- ``model.safetensors``: the state dict, floating tensors stored as fp16 (half the size, and
  every model here runs fine from fp16 weights promoted to fp32),
- ``config.json``: at least ``method`` (the method these weights serve, e.g. ``"sparse3diff"``),
  ``task``, ``architecture`` (the model constructor's keyword arguments) and ``format_version``,
- optionally ``README.md``: the model card.

Weights are never unpickled: only safetensors are read, because loading a pickle
(``.bin``/``.pt``/``.pth``/``.ckpt``) can run arbitrary code from whoever made the file.

A *spec* names weights for :func:`resolve_weights`, tried in this order:

1. ``None``, ``""`` or ``"default"``: the embedded default for the method,
2. the name of an embedded folder (``src/napari_voxrecon/weights/<name>/``),
3. an existing local folder,
4. a Hub repo id ``org/name`` or ``org/name@revision`` (branch, tag or commit), fetched with
   ``huggingface_hub`` into its usual cache (``HF_HOME`` / ``HF_HUB_CACHE`` respected).

Offline use is the normal case: with ``HF_HUB_OFFLINE=1``, or when the network fails, Hub
weights come from the local cache, and a repo that is not cached gives an error that says how to
fetch it (``voxrecon weights pull org/name`` on a connected machine) or to use a local folder.

torch, safetensors and huggingface_hub are imported inside the functions so that importing this
module (the CLI does, at start) stays cheap.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .errors import VoxreconError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "EMBEDDED_ROOT",
    "FORMAT_VERSION",
    "HUB_ALLOW_PATTERNS",
    "WEIGHTS_FILE",
    "default_weights",
    "describe_weights",
    "embedded_names",
    "hub_cache_dir",
    "hub_offline",
    "list_weights",
    "load_weights",
    "parse_hub_spec",
    "pull_weights",
    "push_weights",
    "read_config",
    "resolve_weights",
    "save_weights",
    "validate_weights_folder",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
FORMAT_VERSION = 1

# Module level (not a constant baked into functions) so tests, and packagers who keep the
# weights elsewhere, can point it at another folder.
EMBEDDED_ROOT: Path = Path(__file__).resolve().parent / "weights"

# Only what a weights folder may hold is downloaded: a repo that also carries pickles or
# training checkpoints costs neither the bandwidth nor the risk.
HUB_ALLOW_PATTERNS: list[str] = ["*.safetensors", CONFIG_FILE, CARD_FILE]

# Suffixes of pickle-based formats, refused for safety (torch.load runs code from the file).
PICKLE_SUFFIXES: tuple[str, ...] = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# Words that mean "the embedded default" so front ends can pass their widget/flag value as is.
_DEFAULT_SPECS = ("", "default")

# org/name[@revision]; names follow the Hub's rules (letters, digits, '-', '_', '.'); a revision
# may hold '/' (e.g. refs/pr/1). Exact validation is left to huggingface_hub.
_HUB_RE = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+)(?:@(?P<rev>[^\s@]+))?$")

_ACCEPTED_FORMS = (
    "'default' (the embedded default for the method), an embedded name, a local folder holding "
    f"{WEIGHTS_FILE} + {CONFIG_FILE}, or a Hugging Face repo id 'org/name' or 'org/name@revision'"
)


# ---------------------------------------------------------------------------- config & folders


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _folder_size(folder: Path) -> int:
    # stat() follows the Hub cache's symlinks to the blobs, so this is the real payload size.
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _check_config(config: Any, where: str) -> dict[str, Any]:
    """Check the keys every model relies on; ``where`` names the source in messages."""
    if not isinstance(config, dict):
        raise VoxreconError(f"{where}: {CONFIG_FILE} must hold a JSON object, got {type(config).__name__}.")
    method = config.get("method")
    if not isinstance(method, str) or not method.strip():
        raise VoxreconError(
            f"{where}: {CONFIG_FILE} lacks a \"method\" entry (the method these weights serve, e.g. "
            "\"sparse3diff\"); add it, or save the weights again with napari_voxrecon.weights.save_weights."
        )
    if not isinstance(config.get("task"), str):
        raise VoxreconError(f"{where}: {CONFIG_FILE} lacks a \"task\" entry (e.g. \"sparse\"); add it.")
    if not isinstance(config.get("architecture"), dict):
        raise VoxreconError(
            f"{where}: {CONFIG_FILE} lacks an \"architecture\" object (the model's constructor arguments); add it."
        )
    return config


def read_config(folder: str | os.PathLike[str], *, where: str | None = None) -> dict[str, Any]:
    """Read and check ``config.json`` of a weights folder (no tensors are read)."""
    folder = Path(folder)
    where = where or str(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise VoxreconError(
            f"{where} has no {CONFIG_FILE}; a weights folder needs {WEIGHTS_FILE} + {CONFIG_FILE} "
            "(write both with napari_voxrecon.weights.save_weights)."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VoxreconError(f"{where}: cannot read {CONFIG_FILE} ({err}); fix or replace the file.") from err
    config = _check_config(config, where)
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise VoxreconError(
            f"{where}: {CONFIG_FILE} lacks an integer \"format_version\"; it was not written by "
            "napari-voxrecon. Save the weights with napari_voxrecon.weights.save_weights."
        )
    if version > FORMAT_VERSION:
        raise VoxreconError(
            f"{where} uses weights format {version}, newer than this napari-voxrecon understands "
            f"({FORMAT_VERSION}); upgrade napari-voxrecon."
        )
    return config


def _pickle_refusal(where: str, pickled: list[str]) -> VoxreconError:
    names = ", ".join(sorted(pickled)[:3])
    return VoxreconError(
        f"{where} holds only pickled weights ({names}) and no {WEIGHTS_FILE}: pickled weights are refused "
        "for safety, since loading them can run arbitrary code. Convert them once, on a machine you trust: "
        "`sd = torch.load(FILE, weights_only=True)` then "
        "`napari_voxrecon.weights.save_weights(FOLDER, sd, config)`, and use FOLDER."
    )


def validate_weights_folder(
    folder: str | os.PathLike[str], method: str | None = None, *, where: str | None = None
) -> dict[str, Any]:
    """Check that ``folder`` is a usable weights folder (for ``method`` if given); return its config.

    Only names and ``config.json`` are looked at; tensors are read by :func:`load_weights`.
    """
    folder = Path(folder)
    where = where or str(folder)
    if not folder.is_dir():
        raise VoxreconError(f"{where} is not a folder; pass a folder holding {WEIGHTS_FILE} + {CONFIG_FILE}.")
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if WEIGHTS_FILE not in names:
        pickled = [n for n in names if n.lower().endswith(PICKLE_SUFFIXES)]
        if pickled:
            raise _pickle_refusal(where, pickled)
        others = [n for n in names if n.endswith(".safetensors")]
        hint = f" (found {', '.join(sorted(others))}: rename it to {WEIGHTS_FILE})" if others else ""
        raise VoxreconError(
            f"{where} has no {WEIGHTS_FILE}{hint}; a weights folder needs {WEIGHTS_FILE} + {CONFIG_FILE}."
        )
    config = read_config(folder, where=where)
    if method is not None and config["method"] != method:
        raise VoxreconError(
            f"Weights {where} were made for method '{config['method']}', not '{method}': pick weights made "
            f"for '{method}' (see `voxrecon weights list`) or run method '{config['method']}' with them."
        )
    return config


def read_card(folder: str | os.PathLike[str]) -> str | None:
    """The model card (``README.md``) of a weights folder, or None if it has none."""
    path = Path(folder) / CARD_FILE
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


# ---------------------------------------------------------------------------- embedded weights


def _embedded_folders() -> dict[str, Path]:
    """Embedded weights folders by name; the root may be missing or empty (no weights shipped yet)."""
    root = Path(EMBEDDED_ROOT)
    if not root.is_dir():
        return {}
    found = {}
    for sub in sorted(root.iterdir()):
        # A folder counts once it has a config; skips __pycache__, half-copied folders, dot folders.
        if sub.is_dir() and not sub.name.startswith((".", "_")) and (sub / CONFIG_FILE).is_file():
            found[sub.name] = sub
    return found


def embedded_names() -> list[str]:
    """Names of the weights embedded in the package."""
    return list(_embedded_folders())


def _embedded_configs() -> dict[str, dict[str, Any]]:
    """Configs of embedded folders that can be read; broken ones are left out of discovery here
    (asking for one by name still gives its precise error)."""
    configs = {}
    for name, folder in _embedded_folders().items():
        try:
            configs[name] = read_config(folder, where=f"embedded weights '{name}'")
        except VoxreconError:
            continue
    return configs


def _default_name(method: str, configs: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The embedded default for ``method`` (None when there is none); raises if it is ambiguous."""
    candidates = [n for n, c in configs.items() if c.get("method") == method]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        return None
    marked = [n for n in candidates if configs[n].get("default") is True]
    if len(marked) == 1:
        return marked[0]
    # A packaging mistake; say which folders to fix rather than pick one silently (that would
    # make results depend on folder order).
    raise VoxreconError(
        f"Embedded weights for method '{method}' are ambiguous ({', '.join(candidates)}): exactly one "
        f"must have \"default\": true in its {CONFIG_FILE}. Pass one by name meanwhile."
    )


def default_weights(method: str) -> Path:
    """Folder of the embedded default weights for ``method``."""
    configs = _embedded_configs()
    name = _default_name(method, configs)
    if name is None:
        have = ", ".join(f"{n} ({c['method']})" for n, c in configs.items()) or "none"
        raise VoxreconError(
            f"Method '{method}' has no embedded default weights (embedded: {have}); pass weights "
            "explicitly (--weights org/name, org/name@revision, or a local folder)."
        )
    return _embedded_folders()[name]


# ---------------------------------------------------------------------------- Hub helpers


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder, read from the environment at call time.

    huggingface_hub reads ``HF_HUB_CACHE``/``HF_HOME`` once at import; reading them again here
    means a value set later (by a launcher, a test, the widget) is still respected.
    """
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(os.path.expandvars(os.path.expanduser(env[var])))
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(env["HF_HOME"]))) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """True when Hub access is switched off (``HF_HUB_OFFLINE``), now or at import of huggingface_hub."""
    if _is_true(os.environ.get("HF_HUB_OFFLINE")):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def parse_hub_spec(spec: str) -> tuple[str, str | None] | None:
    """``'org/name@rev'`` -> ``('org/name', 'rev')``; ``'org/name'`` -> ``('org/name', None)``;
    anything that is not a valid Hub model id -> None."""
    m = _HUB_RE.match(spec.strip())
    if m is None:
        return None
    repo_id = m.group("repo")
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)
    except Exception:  # HFValidationError (a ValueError); any failure means "not a repo id"
        return None
    return repo_id, m.group("rev")


def _hub_label(repo_id: str, revision: str | None) -> str:
    return f"{repo_id}@{revision}" if revision else repo_id


def _is_network_error(err: BaseException) -> bool:
    """Connection-level failures, whatever HTTP client huggingface_hub uses (httpx2/requests)."""
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    module = type(err).__module__.split(".")[0]
    if module in {"httpx", "httpx2", "httpcore", "requests", "urllib3"}:
        return True
    # Socket-level errors (DNS, reset) are OSErrors; missing files and permissions are not network.
    return isinstance(err, OSError) and not isinstance(err, (FileNotFoundError, PermissionError))


def _silent_tqdm() -> type:
    """A huggingface_hub tqdm class that never draws (progress=False, e.g. inside the widget)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Silent(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return _Silent


def _not_cached_error(repo_id: str, revision: str | None, reason: str) -> VoxreconError:
    label = _hub_label(repo_id, revision)
    return VoxreconError(
        f"Weights '{label}' are not in the local Hugging Face cache ({hub_cache_dir()}) and there is no "
        f"network ({reason}). On a connected machine run `voxrecon weights pull {label}` with the same "
        f"HF_HOME/HF_HUB_CACHE (then copy that cache folder here), or pass a local weights folder "
        f"({WEIGHTS_FILE} + {CONFIG_FILE}) instead; no local folder '{label}' exists either."
    )


def _incomplete_error(repo_id: str, revision: str | None, err: Exception) -> VoxreconError:
    label = _hub_label(repo_id, revision)
    return VoxreconError(
        f"The cached copy of '{label}' is incomplete (an interrupted download) and the Hub cannot be reached: "
        f"run `voxrecon weights pull {label}` with network, or pass a local weights folder."
    )


def _hub_error(err: Exception, repo_id: str, revision: str | None) -> VoxreconError:
    """Turn a huggingface_hub HTTP error into a message that says what to do."""
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    label = _hub_label(repo_id, revision)
    if isinstance(err, RevisionNotFoundError):
        return VoxreconError(f"'{repo_id}' has no revision '{revision}' on the Hub; check the branch, tag or commit.")
    if isinstance(err, GatedRepoError):
        return VoxreconError(
            f"'{repo_id}' is gated: accept its terms on https://huggingface.co/{repo_id} and log in "
            "(`hf auth login` or HF_TOKEN), then try again."
        )
    if isinstance(err, RepositoryNotFoundError):
        return VoxreconError(
            f"'{repo_id}' was not found on the Hub: check the id; if the repo is private, log in "
            "(`hf auth login` or HF_TOKEN) with an account that can read it."
        )
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        return VoxreconError(
            f"The Hub refused access to '{label}' (HTTP {status}): log in (`hf auth login` or HF_TOKEN) "
            "with a token that has the needed rights."
        )
    return VoxreconError(f"The Hub failed for '{label}' ({type(err).__name__}: {err}); try again later.")


def _hub_snapshot(repo_id: str, revision: str | None, *, progress: bool, local_files_only: bool) -> Path:
    """snapshot_download with the weights' file patterns; errors become VoxreconError.

    Online, huggingface_hub itself falls back to the cache when the connection fails; other
    network errors (proxy, plain ConnectionError) are retried here against the cache.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:  # huggingface_hub >= 2: a cached snapshot known to miss files
        from huggingface_hub.errors import IncompleteSnapshotError
    except ImportError:  # pragma: no cover - older huggingface_hub
        IncompleteSnapshotError = type("IncompleteSnapshotError", (Exception,), {})  # never raised

    kwargs: dict[str, Any] = dict(
        revision=revision,
        cache_dir=str(hub_cache_dir()),
        allow_patterns=HUB_ALLOW_PATTERNS,
    )
    if not progress:
        kwargs["tqdm_class"] = _silent_tqdm()
    offline_reason = "HF_HUB_OFFLINE is set" if hub_offline() else "local files only"
    if local_files_only:
        try:
            return Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
        except IncompleteSnapshotError as err:
            raise _incomplete_error(repo_id, revision, err) from err
        except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
            raise _not_cached_error(repo_id, revision, offline_reason) from err
    try:
        return Path(snapshot_download(repo_id, **kwargs))
    except IncompleteSnapshotError as err:
        raise _incomplete_error(repo_id, revision, err) from err
    except LocalEntryNotFoundError as err:
        # Raised online only after the Hub could not be reached and the cache had nothing.
        raise _not_cached_error(repo_id, revision, f"the Hub could not be reached: {_first_line(err)}") from err
    except OfflineModeIsEnabled as err:
        raise _not_cached_error(repo_id, revision, "HF_HUB_OFFLINE is set") from err
    except HfHubHTTPError as err:
        raise _hub_error(err, repo_id, revision) from err
    except Exception as err:
        if not _is_network_error(err):
            raise
        try:
            return Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
        except IncompleteSnapshotError as err2:
            raise _incomplete_error(repo_id, revision, err2) from err2
        except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err2:
            raise _not_cached_error(repo_id, revision, f"{type(err).__name__}: {_first_line(err)}") from err2


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _cached_repo_files(repo_id: str, snapshot: Path) -> list[str]:
    """Names of all files of the repo at this snapshot's commit, from huggingface_hub's cached
    tree listing (written by snapshot_download; no network). Empty when unknown."""
    try:
        from huggingface_hub import get_cached_repo_tree

        return [f.path for f in get_cached_repo_tree(repo_id, revision=snapshot.name, cache_dir=str(hub_cache_dir()))]
    except Exception:  # older huggingface_hub, or no listing cached: we simply cannot tell
        return []


def _validate_hub_snapshot(repo_id: str, revision: str | None, snapshot: Path, method: str | None) -> dict[str, Any]:
    label = _hub_label(repo_id, revision)
    where = f"Hub weights '{label}' (cached at {snapshot})"
    if not (snapshot / WEIGHTS_FILE).is_file():
        # allow_patterns kept any pickles out of the snapshot; the cached tree listing still says
        # whether the repo only has pickles, which deserves the explicit refusal.
        names = [p.name for p in snapshot.iterdir()] if snapshot.is_dir() else []
        names += [Path(n).name for n in _cached_repo_files(repo_id, snapshot)]
        pickled = sorted({n for n in names if n.lower().endswith(PICKLE_SUFFIXES)})
        if pickled:
            raise _pickle_refusal(f"Hub repo '{label}'", pickled)
        if snapshot.is_dir() and any(snapshot.iterdir()) and (snapshot / CONFIG_FILE).is_file():
            raise VoxreconError(
                f"{where} has no {WEIGHTS_FILE}: the repo does not hold napari-voxrecon weights, or the "
                f"cached copy is incomplete (run `voxrecon weights pull {label}` with network)."
            )
    return validate_weights_folder(snapshot, method, where=where)


# ---------------------------------------------------------------------------- resolve / load


def _resolve(spec: str | os.PathLike[str] | None, method: str | None, *, progress: bool) -> Path:
    text = "" if spec is None else os.fspath(spec).strip()
    if text.lower() in _DEFAULT_SPECS:
        if method is None:
            raise VoxreconError("Say which method the default weights are for (e.g. --method sparse3diff).")
        folder = default_weights(method)
        validate_weights_folder(folder, method, where=f"embedded weights '{folder.name}'")
        return folder
    embedded = _embedded_folders()
    if text in embedded:
        validate_weights_folder(embedded[text], method, where=f"embedded weights '{text}'")
        return embedded[text]
    local = Path(os.path.expanduser(text))
    if local.exists():
        if local.is_file():
            if local.name.lower().endswith(PICKLE_SUFFIXES):
                raise _pickle_refusal(str(local), [local.name])
            raise VoxreconError(
                f"{local} is a file; pass the folder that holds {WEIGHTS_FILE} + {CONFIG_FILE} (e.g. {local.parent})."
            )
        validate_weights_folder(local, method)
        return local.resolve()
    hub = parse_hub_spec(text)
    if hub is not None:
        repo_id, revision = hub
        snapshot = _hub_snapshot(repo_id, revision, progress=progress, local_files_only=hub_offline())
        _validate_hub_snapshot(repo_id, revision, snapshot, method)
        return snapshot
    names = ", ".join(embedded) or "none"
    looks_like_path = os.sep in text or "/" in text or text.startswith((".", "~"))
    what = f"no folder '{text}' exists" if looks_like_path else f"'{text}' is not a known weights name"
    raise VoxreconError(f"Unknown weights '{text}': {what}. Embedded weights: {names}. Use {_ACCEPTED_FORMS}.")


def resolve_weights(spec: str | os.PathLike[str] | None, method: str | None, *, progress: bool = True) -> Path:
    """Find (and if needed download) the weights folder that ``spec`` names, checked for ``method``.

    ``spec``: None/""/"default", an embedded name, a local folder, or ``org/name[@revision]``.
    ``method``: the method that will use them; their config must say the same. None skips that
    check (inspection only, e.g. ``voxrecon weights info``) and cannot be used with "default".
    ``progress``: show huggingface_hub's progress bar while downloading (off in the widget,
    which reports progress its own way).
    """
    return _resolve(spec, method, progress=progress)


def load_weights(
    spec: str | os.PathLike[str] | None,
    method: str,
    device: str | torch.device = "cpu",
    *,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Resolve ``spec`` and load its tensors: (state dict with float tensors as float32, config, folder).

    Only ``safetensors.torch.load_file`` is used: nothing is ever unpickled.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_weights(spec, method, progress=progress)
    config = read_config(folder)
    try:
        raw = load_file(str(folder / WEIGHTS_FILE), device=str(device))
    except (SafetensorError, OSError) as err:
        raise VoxreconError(
            f"Cannot read {folder / WEIGHTS_FILE} ({_first_line(err)}): the file is damaged or incomplete; "
            "download or copy it again."
        ) from err
    # Stored as fp16 to halve the size; models compute in float32.
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in raw.items()}
    return state, config, folder


# ---------------------------------------------------------------------------- save


def _default_card(config: Mapping[str, Any]) -> str:
    """A minimal model card so that pushed repos are never blank; callers should pass a real one."""
    return (
        "---\nlibrary_name: napari-voxrecon\ntags:\n- napari-voxrecon\n- microscopy\n"
        f"- {config['method']}\n---\n\n# {config['method']} weights ({config['task']})\n\n"
        "Weights for the napari-voxrecon method "
        f"`{config['method']}`. Load them with `napari_voxrecon.weights.load_weights(SPEC, "
        f"\"{config['method']}\")` or `--weights SPEC` on the command line.\n\n"
        f"Architecture:\n\n```json\n{json.dumps(config['architecture'], indent=2, sort_keys=True)}\n```\n"
    )


def _fp16_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import torch

    if not isinstance(state_dict, Mapping) or not state_dict:
        raise VoxreconError("save_weights needs a non-empty state dict (name -> tensor).")
    out = {}
    for name, value in state_dict.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise VoxreconError(f"save_weights: entry {name!r} is not a str -> torch.Tensor pair.")
        t = value.detach().to("cpu")
        if t.is_floating_point():
            half = t.to(torch.float16)
            # fp16 tops out at 65504: a weight beyond that would silently become inf.
            if bool(torch.isfinite(t).all()) and not bool(torch.isfinite(half).all()):
                raise VoxreconError(
                    f"save_weights: tensor '{name}' has values beyond the fp16 range (|x| > 65504); "
                    "rescale it (e.g. fold the scale into the config) before saving."
                )
            t = half
        # clone: safetensors refuses tensors that share storage (tied weights, views).
        out[name] = t.contiguous().clone()
    return out


def save_weights(
    folder: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    card: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a weights folder: fp16 ``model.safetensors``, ``config.json`` and ``README.md``.

    Floating tensors are cast to fp16, integer/bool tensors kept. ``format_version`` is added to
    the config. An existing non-empty folder is refused unless ``overwrite``. Everything is written
    to a temporary sibling folder first and then renamed into place, so a crash or a full disk
    never leaves a half-written weights folder behind. With ``card=None`` a minimal card is made.
    Returns the folder.
    """
    from safetensors.torch import save_file

    target = Path(os.path.expanduser(os.fspath(folder)))
    cfg = dict(config) if isinstance(config, Mapping) else config
    cfg = _check_config(cfg, f"save_weights({target})")
    cfg["format_version"] = FORMAT_VERSION
    try:
        cfg_text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    except (TypeError, ValueError) as err:
        raise VoxreconError(f"save_weights: config is not JSON-serialisable ({err}).") from err
    tensors = _fp16_state(state_dict)

    if target.exists():
        if not target.is_dir():
            raise VoxreconError(f"{target} exists and is not a folder; choose another path.")
        if any(target.iterdir()) and not overwrite:
            raise VoxreconError(
                f"{target} already holds files; choose another folder or pass overwrite=True (--overwrite)."
            )
    target.parent.mkdir(parents=True, exist_ok=True)

    # Same parent => same filesystem => the final rename is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    backup: Path | None = None
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(cfg_text, encoding="utf-8")
        (tmp / CARD_FILE).write_text(card if card is not None else _default_card(cfg), encoding="utf-8")
        if target.exists():
            # Directories cannot be replaced atomically everywhere: move the old one aside first,
            # and put it back if the swap fails.
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            backup.rmdir()
            os.replace(target, backup)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if backup is not None and backup.exists() and not target.exists():
            os.replace(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------- list / describe


def _hub_cached_entries() -> list[dict[str, Any]]:
    """Weights found in the local HF cache: one entry per cached revision whose snapshot has a
    config.json with a "method" (other models in the cache are not ours and are skipped)."""
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir(str(hub_cache_dir()))
    except Exception:  # CacheNotFound (no cache yet), ValueError (a file), unreadable: nothing cached
        return []
    entries = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            cfg_path = Path(rev.snapshot_path) / CONFIG_FILE
            try:
                cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(cfg, dict) or not isinstance(cfg.get("method"), str):
                continue
            refs = sorted(rev.refs)
            # The spec that resolve_weights maps back to this snapshot.
            if "main" in refs:
                spec = repo.repo_id
            else:
                spec = f"{repo.repo_id}@{refs[0] if refs else rev.commit_hash}"
            entries.append(
                {
                    "name": spec,
                    "source": "hub-cache",
                    "method": cfg["method"],
                    "task": cfg.get("task"),
                    "default": False,
                    "size": int(rev.size_on_disk),
                    "path": str(rev.snapshot_path),
                    "repo_id": repo.repo_id,
                    "revision": rev.commit_hash,
                    "refs": refs,
                    "complete": (Path(rev.snapshot_path) / WEIGHTS_FILE).is_file(),
                }
            )
    return sorted(entries, key=lambda e: (e["repo_id"], e["name"], e["revision"]))


def list_weights() -> list[dict[str, Any]]:
    """Embedded weights, then Hub weights in the local cache (no network).

    Each entry: name (a spec resolve_weights accepts), source ("embedded" | "hub-cache"), method,
    task, default, size (bytes), path; hub entries add repo_id, revision (commit), refs, complete.
    """
    entries: list[dict[str, Any]] = []
    configs = _embedded_configs()
    folders = _embedded_folders()
    defaults: set[str] = set()
    for method in {c["method"] for c in configs.values()}:
        try:
            name = _default_name(method, configs)
        except VoxreconError:
            name = None  # ambiguous: shown without a default mark; default_weights explains
        if name is not None:
            defaults.add(name)
    for name, cfg in configs.items():
        entries.append(
            {
                "name": name,
                "source": "embedded",
                "method": cfg["method"],
                "task": cfg.get("task"),
                "default": name in defaults,
                "size": _folder_size(folders[name]),
                "path": str(folders[name]),
            }
        )
    entries.extend(_hub_cached_entries())
    return entries


def describe_weights(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Config, card, tensor count, parameter count and size of a weights folder (reads only the
    safetensors header, not the tensors)."""
    from safetensors import safe_open

    folder = Path(folder)
    config = read_config(folder)
    n_params = 0
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
        keys = list(f.keys())
        for k in keys:
            n = 1
            for d in f.get_slice(k).get_shape():
                n *= int(d)
            n_params += n
    return {
        "path": str(folder),
        "config": config,
        "card": read_card(folder),
        "tensors": len(keys),
        "parameters": n_params,
        "size": _folder_size(folder),
    }


# ---------------------------------------------------------------------------- pull / push


def _require_online(action: str) -> None:
    if hub_offline():
        raise VoxreconError(f"Cannot {action}: HF_HUB_OFFLINE is set. Unset it (or set it to 0) on a machine with network.")


def pull_weights(repo_spec: str, *, progress: bool = True) -> Path:
    """Download ``org/name[@revision]`` into the HF cache (network required); return the snapshot.

    The repo is checked first, so a missing network, a wrong id or a pickle-only repo are reported
    as such instead of falling back silently to an older cached copy.
    """
    hub = parse_hub_spec(repo_spec)
    if hub is None:
        raise VoxreconError(f"'{repo_spec}' is not a Hub repo id; use 'org/name' or 'org/name@revision'.")
    repo_id, revision = hub
    _require_online(f"pull '{repo_spec}'")
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError

    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=False)
    except HfHubHTTPError as err:
        raise _hub_error(err, repo_id, revision) from err
    except Exception as err:
        if _is_network_error(err):
            raise VoxreconError(
                f"Cannot reach the Hugging Face Hub to pull '{repo_spec}' ({type(err).__name__}: {_first_line(err)}); "
                "check the network or proxy (HTTPS_PROXY), or copy a weights folder here instead."
            ) from err
        raise
    files = [s.rfilename for s in (info.siblings or [])]
    if files and WEIGHTS_FILE not in files:
        pickled = [f for f in files if f.lower().endswith(PICKLE_SUFFIXES)]
        if pickled:
            raise _pickle_refusal(f"Hub repo '{repo_spec}'", pickled)
        raise VoxreconError(
            f"Hub repo '{repo_spec}' has no {WEIGHTS_FILE}: it does not hold napari-voxrecon weights."
        )
    snapshot = _hub_snapshot(repo_id, revision, progress=progress, local_files_only=False)
    _validate_hub_snapshot(repo_id, revision, snapshot, None)
    return snapshot


def push_weights(
    folder: str | os.PathLike[str],
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    *,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Upload a weights folder to the Hub repo ``repo_id`` (created if needed); return its URL.

    The folder is validated first, so nothing half-usable is published. ``revision`` names a
    branch (created from main if missing); ``repo_id`` may also carry it as ``org/name@branch``.
    """
    folder = Path(os.path.expanduser(os.fspath(folder)))
    config = validate_weights_folder(folder)
    hub = parse_hub_spec(repo_id)
    if hub is None:
        raise VoxreconError(f"'{repo_id}' is not a Hub repo id; use 'org/name' (optionally 'org/name@branch').")
    repo_id, spec_rev = hub
    revision = revision or spec_rev
    _require_online(f"push to '{repo_id}'")
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError, LocalTokenNotFoundError

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            revision=revision,
            allow_patterns=[WEIGHTS_FILE, CONFIG_FILE, CARD_FILE],
            commit_message=commit_message or f"Upload {config['method']} weights with napari-voxrecon",
        )
    except LocalTokenNotFoundError as err:
        raise VoxreconError(
            f"No Hugging Face token to push to '{repo_id}': run `hf auth login` or set HF_TOKEN to a token with write access."
        ) from err
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            raise VoxreconError(
                f"The Hub refused the push to '{repo_id}' (HTTP {status}): log in with a token that has write "
                "access to that user or organisation (`hf auth login` or HF_TOKEN)."
            ) from err
        raise _hub_error(err, repo_id, revision) from err
    except Exception as err:
        if _is_network_error(err):
            raise VoxreconError(
                f"Cannot reach the Hugging Face Hub to push '{repo_id}' ({type(err).__name__}: {_first_line(err)}); "
                "push from a machine with network."
            ) from err
        raise
    return str(getattr(commit, "commit_url", None) or url)
