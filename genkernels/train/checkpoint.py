"""Checkpoints: safetensors for every tensor, JSON for everything else; no pickle anywhere.

A checkpoint is a directory:

    trainer.json          format marker, model name + config, train config, step, history,
                          optimizer index, GradScaler and EMA scalars, non-tensor RNG fields,
                          and the byte size of every file below (written last: a checkpoint
                          without it was never completed)
    model.safetensors     the live weights (model.state_dict(), tied tensors stored once)
    ema.safetensors       the EMA weights (when EMA is on)
    optimizer.safetensors every optimizer state tensor, keyed "<group>.<param index>.<name>";
                          trainer.json["optimizers"] maps them back into state_dict() form
    rng.safetensors       RNG byte tensors: "rank<r>.torch_cpu", "rank<r>.cuda<i>",
                          "rank<r>.numpy_keys", "rank<r>.python_state", "data.generator",
                          "data.order"

Sharded (strategy "fsdp" under torchrun, K ranks): model.safetensors, ema.safetensors and
optimizer.safetensors are replaced by one file per rank, "model-rank<r>-of-<K>.safetensors" (and
"ema-...", "optimizer-..."), each written by its rank and holding that rank's shard of every
sharded tensor under the tensor's name (rank 0 also holds the unsharded ones: buffers, the AdamW
step counts). trainer.json["shards"] is the index: for every tensor its full shape, dtype and the
pieces [{"rank", "offsets", "shape"}] that tile it. Loading re-assembles whole tensors from the
pieces, so `load_checkpoint` returns the same thing for both layouts, and `restore_trainer` cuts
them again for the loading run's own sharding: a checkpoint saved by K ranks resumes on any
number of processes (1 included, with or without fsdp), and `load_model` reads it like any other.
Every rank must see the checkpoint directory (one machine, or a shared filesystem).

It is written to "<path>.tmp" and then swapped in, so a crash never leaves a half-written
checkpoint under the real name. Loading checks the marker, the file list and sizes, and turns any
safetensors parse failure into a ValueError that names the file.
"""
from __future__ import annotations

import json
import random
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from genkernels.train import distributed

FORMAT = "genkernels-checkpoint"
VERSION = 1
META_FILE = "trainer.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint: `meta` is trainer.json; tensors are on the requested device."""

    path: Path
    meta: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    ema_state: Optional[dict[str, torch.Tensor]] = None
    optimizer_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    rng_tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def model_name(self) -> str:
        return self.meta["model"]["name"]

    @property
    def model_config(self) -> dict[str, Any]:
        return self.meta["model"]["config"]

    @property
    def train_config(self) -> dict[str, Any]:
        return self.meta["train_config"]


# -- RNG states ----------------------------------------------------------------------------
def _rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's RNG states as (byte/int tensors, JSON-able scalars)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda" and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{index}"] = state.cpu()
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    version, python_state, gauss_next = random.getstate()
    tensors["python_state"] = torch.tensor(python_state, dtype=torch.int64)
    scalars = {
        "numpy": {"position": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "gauss_next": gauss_next},
    }
    return tensors, scalars


def _set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"].to(torch.uint8))
    cuda_count = sum(1 for key in tensors if key.startswith("cuda"))
    cuda_states = [tensors[f"cuda{i}"] for i in range(cuda_count)]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in cuda_states])
    numpy = scalars["numpy"]
    np.random.set_state(("MT19937", tensors["numpy_keys"].numpy().astype(np.uint32),
                         numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    python = scalars["python"]
    random.setstate((python["version"], tuple(tensors["python_state"].tolist()), python["gauss_next"]))


# -- optimizer state <-> flat tensors + JSON index -----------------------------------------
def _flatten_optimizer(group: str, state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, Any] = {"param_groups": state["param_groups"], "tensors": {}, "values": {}}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                name = f"{group}.{param_id}.{key}"
                tensors[name] = value.detach().contiguous()
                index["tensors"].setdefault(str(param_id), {})[key] = name
            else:
                index["values"].setdefault(str(param_id), {})[key] = value
    return tensors, index


def _unflatten_optimizer(index: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for param_id, names in index["tensors"].items():
        state.setdefault(int(param_id), {}).update({key: tensors[name] for key, name in names.items()})
    for param_id, values in index["values"].items():
        state.setdefault(int(param_id), {}).update(values)
    # JSON turned tuples (betas) into lists; "params" is the one list that stays a list
    param_groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
                    for g in index["param_groups"]]
    return {"state": state, "param_groups": param_groups}


# -- saving --------------------------------------------------------------------------------
def _is_checkpoint_dir(path: Path) -> bool:
    try:
        return json.loads((path / META_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save_checkpoint(path: str | Path, trainer) -> Path:
    """Save everything needed to resume `trainer` exactly. Call on every rank; rank 0 writes.

    Refuses to overwrite a directory that is neither empty nor a genkernels checkpoint, and
    refuses (NonFiniteError) to save NaN/inf weights, EMA weights or optimizer state, so the
    checkpoint already at `path` (the last good one) stays as it is.
    """
    path = Path(path)
    # every rank checks (and agrees on the verdict), so no rank is left waiting below
    _check_finite(trainer, path)
    rng = distributed.gather_objects(_rng_state(trainer.device), trainer.dist)
    tmp = path.with_name(path.name + ".tmp")
    shards = None
    if getattr(trainer, "sharded", False):
        # every rank sees the same directory and checks it, so all raise together
        _check_overwrite(path)
        if trainer.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        distributed.barrier(trainer.dist)
        shards = distributed.gather_objects(_write_shards(tmp, trainer), trainer.dist)
    if trainer.is_main:
        if shards is None:
            _check_overwrite(path)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _write_checkpoint(tmp, trainer, rng, shards)
        old = path.with_name(path.name + ".old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    distributed.barrier(trainer.dist)
    return path


def _check_overwrite(path: Path) -> None:
    if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or _is_checkpoint_dir(path))):
        raise ValueError(f"refusing to overwrite {path}: it exists and is not a genkernels checkpoint")


def _tensor_sets(trainer) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """{"model": ..., "ema": ... (EMA on), "optimizer": flat tensors} and the optimizer index."""
    sets = {"model": dict(trainer.model.state_dict())}
    if trainer.ema is not None:
        sets["ema"] = dict(trainer.ema.shadow)
    optimizer_tensors, optimizer_index = {}, {}
    for group, optimizer in trainer.optimizers.items():
        tensors, optimizer_index[group] = _flatten_optimizer(group, optimizer.state_dict())
        optimizer_tensors.update(tensors)
    sets["optimizer"] = optimizer_tensors
    return sets, optimizer_index


def _shard_file(kind: str, rank: int, world_size: int) -> str:
    return f"{kind}-rank{rank}-of-{world_size}.safetensors"


def _write_shards(directory: Path, trainer) -> dict[str, dict[str, Any]]:
    """Write this rank's pieces of every tensor set; return {kind: {name: {shape, dtype, offsets,
    shape of the piece}}} for the index (rank 0 also writes the unsharded tensors)."""
    rank, world_size = trainer.dist.rank, trainer.dist.world_size
    sets, _ = _tensor_sets(trainer)
    index: dict[str, dict[str, Any]] = {}
    for kind, tensors in sets.items():
        pieces, index[kind] = {}, {}
        for name, tensor in tensors.items():
            if not distributed.is_sharded(tensor) and rank != 0:
                continue
            offsets, shape = distributed.shard_slices(tensor)
            pieces[name] = distributed.local_part(tensor.detach()).contiguous()
            index[kind][name] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
                                 "offsets": offsets, "piece": shape}
        save_file(pieces, str(directory / _shard_file(kind, rank, world_size)))
    return index


def _merge_shard_indexes(per_rank: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    tensors: dict[str, dict[str, Any]] = {}
    for rank, index in enumerate(per_rank):
        for kind, entries in index.items():
            for name, entry in entries.items():
                merged = tensors.setdefault(kind, {}).setdefault(
                    name, {"shape": entry["shape"], "dtype": entry["dtype"], "pieces": []})
                merged["pieces"].append({"rank": rank, "offsets": entry["offsets"], "shape": entry["piece"]})
    return {"world_size": len(per_rank), "tensors": tensors}


def _check_finite(trainer, path: Path) -> None:
    from genkernels.train.trainer import NonFiniteError, _first_nonfinite

    sources = [("weights", trainer.model.state_dict().items())]
    if trainer.ema is not None:
        sources.append(("EMA weights", trainer.ema.shadow.items()))
    for group, optimizer in trainer.optimizers.items():
        params = [p for param_group in optimizer.param_groups for p in param_group["params"]]
        sources.append((f"optimizer state of group {group!r}",
                        ((f"param {index} {key}", value) for index, p in enumerate(params)
                         for key, value in optimizer.state.get(p, {}).items()
                         if isinstance(value, torch.Tensor))))
    problems = [(what, _first_nonfinite(tensors)) for what, tensors in sources]
    found = [(what, problem) for what, problem in problems if problem is not None]
    # sharded tensors are checked shard by shard: the ranks agree on the verdict
    for rank_found in distributed.gather_objects(found, trainer.dist):
        for what, problem in rank_found:
            kept = f"the checkpoint in {path} is kept as it was" if path.exists() else "nothing was written"
            raise NonFiniteError(f"step {trainer.step}: refusing to save a checkpoint with non-finite "
                                 f"{what} ({problem}); {kept}")


def _write_checkpoint(directory: Path, trainer, rng_per_rank: list,
                      shards: Optional[list[dict[str, Any]]] = None) -> None:
    """Rank 0's part: the whole-tensor files (or, sharded, the index of the ranks' files), the RNG
    states and trainer.json."""
    if shards is None:
        save_model(trainer.model, str(directory / "model.safetensors"), force_contiguous=True)
        if trainer.ema is not None:
            save_file({k: v.contiguous() for k, v in trainer.ema.shadow.items()},
                      str(directory / "ema.safetensors"))
        sets, optimizer_index = _tensor_sets(trainer)
        save_file(sets["optimizer"], str(directory / "optimizer.safetensors"))
    else:
        optimizer_index = {group: _flatten_optimizer(group, optimizer.state_dict())[1]
                           for group, optimizer in trainer.optimizers.items()}

    data_state = trainer.batches.state_dict()
    rng_tensors = {"data.generator": data_state["generator"], "data.order": data_state["order"]}
    rng_scalars = {"data": {"position": data_state["position"], "epoch": data_state["epoch"]}}
    for rank, (tensors, scalars) in enumerate(rng_per_rank):
        rng_tensors.update({f"rank{rank}.{k}": v.contiguous() for k, v in tensors.items()})
        rng_scalars[f"rank{rank}"] = scalars
    save_file(rng_tensors, str(directory / "rng.safetensors"))

    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": trainer.model.name, "config": trainer.model.config_dict()},
        "train_config": trainer.config.to_dict(),
        "step": trainer.step,
        "skipped_steps": trainer.skipped_steps,
        "consecutive_skips": trainer.consecutive_skips,
        "world_size": trainer.dist.world_size,
        "metadata": trainer.metadata,
        "history": trainer.history,
        "optimizers": optimizer_index,
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "ema": None if trainer.ema is None else {"decay": trainer.ema.decay,
                                                 "num_updates": trainer.ema.num_updates},
        "rng": rng_scalars,
        "shards": None if shards is None else _merge_shard_indexes(shards),
        "files": {f.name: f.stat().st_size for f in sorted(directory.iterdir())},
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=1))


# -- loading -------------------------------------------------------------------------------
def _resolve(path: str | Path) -> Path:
    """Accept the checkpoint directory itself or a run directory holding checkpoint/."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir() and not (path / META_FILE).exists() and (path / "checkpoint" / META_FILE).exists():
        return path / "checkpoint"
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a genkernels checkpoint (a directory holding {META_FILE})")
    if not (path / META_FILE).exists():
        raise ValueError(f"{path} holds no {META_FILE}: not a genkernels checkpoint, or one whose saving "
                         "never completed")
    return path


def _read_meta(path: Path) -> dict[str, Any]:
    meta_file = path / META_FILE
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{meta_file} is not valid JSON (truncated or corrupt): {error}") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file} is not a genkernels checkpoint (no \"format\": \"{FORMAT}\")")
    if meta.get("version") != VERSION:
        raise ValueError(f"{meta_file}: checkpoint format version {meta.get('version')!r}; "
                         f"this genkernels reads version {VERSION}")
    missing = [k for k in ("model", "train_config", "step", "files") if k not in meta]
    if missing:
        raise ValueError(f"{meta_file} lacks the fields {missing} (corrupt checkpoint)")
    for name, size in meta["files"].items():
        file = path / name
        if not file.exists():
            raise ValueError(f"{file} is missing from the checkpoint")
        if file.stat().st_size != size:
            raise ValueError(f"{file} has {file.stat().st_size} bytes, expected {size} (truncated or "
                             "overwritten)")
    return meta


def _load_tensors(file: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file), device=str(device))
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{file} is not a readable safetensors file (truncated or corrupt): {error}") from error


def _load_sharded(path: Path, meta: dict[str, Any], kind: str, device: str | torch.device) -> dict[str, torch.Tensor]:
    """Whole tensors of one tensor set ("model", "ema", "optimizer") assembled from the ranks' files."""
    shards = meta["shards"]
    world_size = int(shards["world_size"])
    handles: dict[int, Any] = {}
    tensors: dict[str, torch.Tensor] = {}
    try:
        for name, entry in shards["tensors"].get(kind, {}).items():
            full = torch.empty(entry["shape"], dtype=getattr(torch, entry["dtype"]))
            covered = 0
            for piece in entry["pieces"]:
                rank = int(piece["rank"])
                file = path / _shard_file(kind, rank, world_size)
                if rank not in handles:
                    try:
                        handles[rank] = safe_open(str(file), framework="pt", device="cpu")
                    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
                        raise ValueError(f"{file} is not a readable safetensors file (truncated or "
                                         f"corrupt): {error}") from error
                value = handles[rank].get_tensor(name)
                if list(value.shape) != list(piece["shape"]):
                    raise ValueError(f"{file}: tensor {name!r} has shape {tuple(value.shape)}, the index "
                                     f"says {tuple(piece['shape'])}")
                region = tuple(slice(o, o + s) for o, s in zip(piece["offsets"], piece["shape"]))
                full[region] = value
                covered += value.numel()
            if covered != full.numel():
                raise ValueError(f"{path / META_FILE}: the pieces of {kind} tensor {name!r} cover {covered} of "
                                 f"its {full.numel()} elements (corrupt index)")
            tensors[name] = full.to(device)
    except (KeyError, TypeError, AttributeError, SafetensorError) as error:
        raise ValueError(f"{path / META_FILE}: the shard index of {kind!r} does not match the files "
                         f"({error!r})") from error
    return tensors


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    weights_only: bool = False) -> Checkpoint:
    """Read a checkpoint directory (or a run directory holding checkpoint/).

    Raises FileNotFoundError when `path` does not exist and ValueError naming the file when the
    checkpoint is foreign, incomplete, truncated or corrupt. `weights_only` skips optimizer and
    RNG state.
    """
    path = _resolve(path)
    meta = _read_meta(path)
    if meta.get("shards"):
        def read(kind):
            return _load_sharded(path, meta, kind, map_location)
    else:
        def read(kind):
            return _load_tensors(path / f"{kind}.safetensors", map_location)
    checkpoint = Checkpoint(path, meta, read("model"))
    if meta.get("ema") is not None:
        checkpoint.ema_state = read("ema")
    if not weights_only:
        tensors = read("optimizer")
        try:
            checkpoint.optimizer_states = {group: _unflatten_optimizer(index, tensors)
                                           for group, index in meta["optimizers"].items()}
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path / META_FILE}: optimizer index does not match "
                             f"optimizer.safetensors ({error!r})") from error
        checkpoint.rng_tensors = _load_tensors(path / "rng.safetensors", "cpu")
    return checkpoint


_CONFIG_HINT = ("the model config in trainer.json no longer matches the saved tensors (edited, or saved "
                "by another version of the model)")


def check_tensor_shapes(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str,
                        target: str) -> None:
    """Raise one ValueError naming `source`, the first tensor whose shape differs and both shapes.

    `expected` maps names to the tensors of the `target` being loaded; names absent from either
    side are left to the caller's missing/unexpected check.
    """
    mismatched = [(name, tuple(state[name].shape), tuple(value.shape)) for name, value in expected.items()
                  if name in state and state[name].shape != value.shape]
    if mismatched:
        name, saved, wanted = mismatched[0]
        more = f" (and {len(mismatched) - 1} more tensors)" if len(mismatched) > 1 else ""
        raise ValueError(f"{source}: tensor {name!r} has shape {saved} but the {target} it is loaded "
                         f"into has {wanted}{more}; {_CONFIG_HINT}")


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict that allows only tied aliases to be absent and names `source` on error."""
    full = module.state_dict()
    target = type(module).__name__
    check_tensor_shapes(full, state, source, target)
    missing = [k for k in full if k not in state]
    unexpected = [k for k in state if k not in full]
    if missing:
        def storage(name):
            return distributed.local_part(full[name]).untyped_storage().data_ptr()
        loaded_storage = {storage(k) for k in state if k in full}
        missing = [k for k in missing if storage(k) not in loaded_storage]
    if missing or unexpected:
        raise ValueError(f"{source} does not match the {target} it is loaded into: "
                         f"missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}; {_CONFIG_HINT}")
    if any(distributed.is_sharded(value) for value in full.values()):
        # FSDP-sharded module: every rank copies its own slices of the whole tensors
        for name, value in state.items():
            distributed.copy_full_into(full[name], value)
        return
    module.load_state_dict(state, strict=False)


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer, state: dict[str, Any], source: str,
                            group: str) -> None:
    params = [p for param_group in optimizer.param_groups for p in param_group["params"]]
    saved_count = sum(len(g["params"]) for g in state["param_groups"])
    if saved_count != len(params):
        raise ValueError(f"{source}: optimizer group {group!r} holds state for {saved_count} parameters, "
                         f"the model has {len(params)}; {_CONFIG_HINT}")
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            # per-parameter moments have the parameter's shape; scalars (step) are 0-d
            if isinstance(value, torch.Tensor) and value.ndim and value.shape != params[index].shape:
                raise ValueError(f"{source}: optimizer tensor '{group}.{index}.{key}' has shape "
                                 f"{tuple(value.shape)} but its parameter has {tuple(params[index].shape)}; "
                                 f"{_CONFIG_HINT}")


def _like_params(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """Optimizer state of whole tensors cut like its (possibly FSDP-sharded) parameters."""
    params = [p for param_group in optimizer.param_groups for p in param_group["params"]]
    if not any(distributed.is_sharded(p) for p in params):
        return state
    per_param = {index: {key: distributed.like(params[index], value)
                         if isinstance(value, torch.Tensor) and value.ndim and not distributed.is_sharded(value)
                         else value for key, value in param_state.items()}
                 for index, param_state in state["state"].items()}
    return {"state": per_param, "param_groups": state["param_groups"]}


def restore_trainer(trainer, checkpoint: Checkpoint) -> None:
    """Put a full checkpoint's state into `trainer` (built with the same model and config)."""
    meta, where = checkpoint.meta, checkpoint.path
    if meta["model"]["name"] != trainer.model.name:
        raise ValueError(f"{where} holds a {meta['model']['name']!r} model, not {trainer.model.name!r}")
    if meta["model"]["config"] != json.loads(json.dumps(trainer.model.config_dict())):
        raise ValueError(f"{where}: the model config differs from the checkpoint's "
                         f"{meta['model']['config']}")
    load_module_state(trainer.model, checkpoint.model_state, str(where / "model.safetensors"))
    if trainer.ema is not None:
        if checkpoint.ema_state is None:
            warnings.warn(f"{where} has no EMA weights; the EMA restarts from the loaded weights")
            trainer.ema.shadow = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        else:
            check_tensor_shapes(trainer.ema.shadow, checkpoint.ema_state, str(where / "ema.safetensors"),
                                f"EMA of the {type(trainer.model).__name__}")
            shadow = {name: distributed.like(trainer.ema.shadow[name], value) if name in trainer.ema.shadow
                      else value for name, value in checkpoint.ema_state.items()}
            trainer.ema.load_state_dict({**meta["ema"], "shadow": shadow})
    if set(checkpoint.optimizer_states) != set(trainer.optimizers):
        raise ValueError(f"{where}: optimizer groups {sorted(checkpoint.optimizer_states)} do not match "
                         f"the model's {sorted(trainer.optimizers)}")
    for group, optimizer in trainer.optimizers.items():
        _check_optimizer_shapes(optimizer, checkpoint.optimizer_states[group],
                                str(where / "optimizer.safetensors"), group)
        optimizer.load_state_dict(_like_params(optimizer, checkpoint.optimizer_states[group]))
    if meta.get("scaler") and trainer.scaler.is_enabled():
        trainer.scaler.load_state_dict(meta["scaler"])
    trainer.step = checkpoint.step
    trainer.skipped_steps = int(meta.get("skipped_steps", 0))
    trainer.consecutive_skips = int(meta.get("consecutive_skips", 0))
    trainer.history = list(meta.get("history", []))

    rng = checkpoint.rng_tensors
    trainer.batches.load_state_dict({"generator": rng["data.generator"], "order": rng["data.order"],
                                     **meta["rng"]["data"]})
    prefix = f"rank{trainer.dist.rank}."
    if f"rank{trainer.dist.rank}" in meta["rng"]:
        tensors = {k[len(prefix):]: v for k, v in rng.items() if k.startswith(prefix)}
        _set_rng_state(tensors, meta["rng"][f"rank{trainer.dist.rank}"])
    else:
        warnings.warn(f"{where} was saved by {meta.get('world_size')} ranks; rank {trainer.dist.rank} "
                      "has no saved RNG state and is reseeded")
        torch.manual_seed(trainer.config.seed + trainer.dist.rank + trainer.step)


def load_model(path: str | Path, *, ema: bool = True, map_location: str | torch.device = "cpu"):
    """Rebuild the model of a checkpoint via genkernels.models.REGISTRY, in eval mode.

    ema=True loads the EMA weights when the checkpoint has them (the default for sampling and
    evaluation); ema=False the live weights.
    """
    from genkernels.models import get_model_class

    checkpoint = load_checkpoint(path, map_location, weights_only=True)
    model_class = get_model_class(checkpoint.model_name)
    try:
        model = model_class.from_config_dict(checkpoint.model_config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{checkpoint.path / META_FILE}: cannot rebuild {checkpoint.model_name!r} from "
                         f"its config: {error}") from error
    model.to(map_location)
    load_module_state(model, checkpoint.model_state, str(checkpoint.path / "model.safetensors"))
    if ema and checkpoint.ema_state is not None:
        with torch.no_grad():
            params = dict(model.named_parameters())
            params.update(model.named_buffers())  # the EMA also holds buffers (see train/ema.py)
            source = str(checkpoint.path / "ema.safetensors")
            check_tensor_shapes(params, checkpoint.ema_state, source, type(model).__name__)
            if set(params) != set(checkpoint.ema_state):
                missing = sorted(set(params) - set(checkpoint.ema_state))
                unexpected = sorted(set(checkpoint.ema_state) - set(params))
                raise ValueError(f"{source} does not match the {type(model).__name__}'s parameters and "
                                 f"buffers: missing tensors {missing[:5]}, unexpected tensors "
                                 f"{unexpected[:5]}; {_CONFIG_HINT}")
            for name, value in checkpoint.ema_state.items():
                params[name].copy_(value)
    model.eval()
    return model
