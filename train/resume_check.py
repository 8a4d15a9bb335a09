"""A resume checks its settings: a rerun into a run folder must ask for the run its checkpoint holds.

    from train.resume_check import check_resume, record_resume
    changes = check_resume(cfg, checkpoint, log=print)    # ResumeSettingsError names each refused change
    note = record_resume(state, changes, cfg)              # after the checkpoint's state is loaded

`sts-train` resumes from the newest intact checkpoint of `--out-dir` when rerun. The request is
compared with what that checkpoint records: its `train_config.yaml`, read through `TrainConfig`, and
what the run started from (`trainer_state.json` "origin": the base model's path and content
fingerprint, the data files). Keys are compared flattened and dotted (`lr`, `task_weights.asr`; a
nested group gives `optimization.lr`), so one comparison serves a flat and a nested config, and
`train.config.RESUME_RULES` says what a change of each means:

- "refuse" (data, model, tasks, tokenization, sequence length, LoRA shape, optimizer and schedule):
  one `ResumeSettingsError` names every changed field with its recorded and requested value.
  `--override` forces them: a warning and a `resume` line in metrics.jsonl say so, every later
  checkpoint keeps the entry in `trainer_state.json` "forced" and holds the new values in its
  `train_config.yaml`, and forced optimizer settings (lr, betas, weight decay) are applied to the
  restored optimizer (`apply_optimizer_settings`) instead of silently staying as the checkpoint had them.
- "warn" (how long, logging, evaluation and save cadence, speed and memory knobs): allowed, listed
  in a warning and in metrics.jsonl.

What `model` means: the base the run started from. A resumed run takes its weights from its own
checkpoint, but `model` still names that base (merge-lora, LoRA resumes, the DPO reference and the
vocabulary read it), so the request's model is compared with the base by content
(`sts.model_files.model_fingerprint`): the base moved elsewhere is the same model, another model
copied into the same path is not, and naming one of the run's own checkpoints is refused with the
base it should name. `shards`, `pairs` and `text_files` are compared by the files they resolve to
(name and size, in order): a moved corpus is the same data, a shard added, removed or rewritten is not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from sts.config import ConfigError, config_to_dict, dict_to_config, upgrade_keys
from sts.errors import InputError
from sts.model_files import model_fingerprint
from train.config import RESUME_RULES, TrainConfig
from train.data import list_shards
from train.pair_data import pair_files

CONFIG_FILE = "train_config.yaml"
STATE_FILE = "trainer_state.json"
FILE_KEYS = ("shards", "pairs", "text_files")
"""Settings that name data files: compared by the files they resolve to, not by their spelling."""
OPTIMIZER_KEYS = ("lr", "betas", "weight_decay")
"""Settings the restored optimizer and schedule carry themselves (`apply_optimizer_settings`)."""


class ResumeSettingsError(InputError, ValueError):
    """A resume whose request changes settings that alter the data or the model; names each one."""


@dataclass
class Change:
    """One setting that differs between the checkpoint and the request."""

    key: str
    """Dotted name (`lr`, `task_weights.asr`, `optimization.lr`)."""
    recorded: object
    requested: object
    rule: str
    """"refuse", "warn" or "ignore" (`RESUME_RULES`)."""
    described: bool = False
    """recorded/requested are descriptions (a model's identity, a file summary), shown as they are."""

    def show(self) -> str:
        show = str if self.described else repr
        return f"{self.key}: {show(self.recorded)} -> {show(self.requested)}"


def flatten(data: dict, prefix: str = "") -> dict:
    """`{"a": {"b": 1}, "c": (2, 3)}` -> `{"a.b": 1, "c": [2, 3]}` (an empty dict stays a value)."""
    out: dict = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def rule_of(key: str) -> str:
    """The `RESUME_RULES` entry of the longest dotted prefix of `key`; "refuse" when none matches."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        rule = RESUME_RULES.get(".".join(parts[:n]))
        if rule is not None:
            return rule
    return "refuse"


def leaf(flat: dict, name: str, default=None):
    """The value of the setting called `name` in a flattened config, whatever group holds it."""
    for key, value in flat.items():
        if key == name or key.endswith(f".{name}"):
            return value
    return default


def model_identity(model: str) -> dict:
    """{"path": absolute path (or the hub id), "fingerprint": content hash or None (hub id)}."""

    path = Path(str(model)).expanduser()
    return {
        "path": str(path.resolve()) if path.exists() else str(model),
        "fingerprint": model_fingerprint(path),
    }


def data_files(key: str, paths: list) -> list[list]:
    """[[file name, size], ...] of the files `paths` resolve to for setting `key`, in order; a path
    that resolves to nothing (a corpus a dpo run names but does not read) as [its name, None]."""

    resolve = {"shards": list_shards, "pairs": pair_files}.get(key, lambda ps: [Path(p) for p in ps])
    files: list[Path] = []
    for p in map(str, paths or []):
        try:
            files += resolve([p])
        except (FileNotFoundError, InputError):
            files.append(Path(p))
    return [[f.name, f.stat().st_size if f.is_file() else None] for f in files]


def run_origin(cfg: TrainConfig) -> dict:
    """What the run is made from, kept in `trainer_state.json` "origin": the base model's identity
    and the data files of `FILE_KEYS`."""
    flat = flatten(config_to_dict(cfg))
    files = {key: data_files(key, leaf(flat, key) or []) for key in FILE_KEYS if leaf(flat, key)}
    return {"model": model_identity(leaf(flat, "model")), "files": files}


def compare(cfg: TrainConfig, recorded: dict, origin: dict | None) -> list[Change]:
    """Every setting of the request `cfg` that differs from the `recorded` config (its YAML mapping)
    and the recorded `origin` (None: a checkpoint written before origins were recorded)."""
    requested = flatten(config_to_dict(cfg))
    try:  # through the config class: the same shape and defaults as the request
        recorded = upgrade_keys(type(cfg), dict(recorded), source=CONFIG_FILE)  # a run of the flat layout
        then = flatten(config_to_dict(dict_to_config(type(cfg), recorded, source=CONFIG_FILE)))
    except ConfigError:  # written by another version: compare the keys both name
        then = {k: v for k, v in flatten(recorded).items() if k in requested}
    changes = []
    for key in sorted(set(requested) & set(then), key=list(requested).index):
        name = key.rsplit(".", 1)[-1]
        if name == "model" or (name in FILE_KEYS and name in (origin or {}).get("files", {})):
            continue  # by identity (`_identity_changes`)
        old, new = _plain(then[key]), _plain(requested[key])
        if old != new:
            changes.append(Change(key, old, new, rule_of(key)))
    changes += _identity_changes(requested, then, origin)
    order = {key: i for i, key in enumerate(requested)}
    return sorted(changes, key=lambda c: order.get(c.key, len(order)))


def _identity_changes(requested: dict, then: dict, origin: dict | None) -> list[Change]:
    """Changes of the base model (by content) and of the data files (by name and size)."""
    changes = []
    model_key = _key_of(requested, "model")
    now = model_identity(leaf(requested, "model"))
    base = (origin or {}).get("model") or model_identity(leaf(then, "model"))  # older checkpoints: by path
    if Path(str(leaf(requested, "out_dir", "."))).resolve() in Path(now["path"]).parents:
        changes.append(Change(model_key, base["path"], f"{now['path']}, a checkpoint of this run (it resumes "
                              "from its own checkpoints by itself: --model names the base it started from)",
                              rule_of(model_key), described=True))  # fmt: skip
    elif base.get("fingerprint") is not None and base["fingerprint"] == now["fingerprint"]:
        pass  # the same model, wherever it lies now
    elif base["path"] != now["path"]:
        changes.append(Change(model_key, base["path"], now["path"], rule_of(model_key)))
    elif base.get("fingerprint") != now["fingerprint"]:
        changes.append(Change(model_key, f"{base['path']} (content {base.get('fingerprint')})",
                              f"other content now ({now['fingerprint']})", rule_of(model_key), described=True))  # fmt: skip
    for name in FILE_KEYS:
        recorded_files = (origin or {}).get("files", {}).get(name)
        if recorded_files is None:
            continue
        current = data_files(name, leaf(requested, name) or [])
        if current != recorded_files:
            key = _key_of(requested, name)
            changes.append(Change(key, _files_summary(recorded_files), _files_summary(current, recorded_files),
                                  rule_of(key), described=True))  # fmt: skip
    return changes


def _key_of(flat: dict, name: str) -> str:
    return next((k for k in flat if k == name or k.endswith(f".{name}")), name)


def check_resume(cfg: TrainConfig, checkpoint: Path, *, log: Callable[[str], None] = print) -> list[Change]:
    """Compare the request with `checkpoint` (see the module docstring); returns the changes that are
    not "ignore" (allowed ones, and refused ones that `cfg.override` forces).

    Raises `ResumeSettingsError` naming the run folder, the checkpoint and every refused change.
    """
    checkpoint = Path(checkpoint)
    path = checkpoint / CONFIG_FILE
    if not path.is_file():
        log(f"warning: {path} is missing: the resumed run's settings cannot be compared with it")
        return []
    try:
        recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        state = json.loads((checkpoint / STATE_FILE).read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ResumeSettingsError(f"{path}: cannot read the settings of the run to resume ({err})") from err
    if not isinstance(recorded, dict):
        raise ResumeSettingsError(f"{path}: not a mapping of settings")
    changes = [c for c in compare(cfg, recorded, state.get("origin")) if c.rule != "ignore"]
    refused = [c for c in changes if c.rule == "refuse"]
    allowed = [c for c in changes if c.rule == "warn"]
    if refused and not cfg.override:
        raise ResumeSettingsError(
            f"{checkpoint}: this run was made with other settings than the request's: "
            f"{'; '.join(c.show() for c in refused)}. They change the data or the model the checkpoint "
            "holds, so resuming would continue one run under another's record: rerun with the recorded "
            "values, start a new run with another --out-dir, or pass --override to continue this run "
            "with them (the checkpoints record that it was forced)"
        )
    if refused:
        log(f"warning: resuming {checkpoint} with FORCED changes (--override): "
            f"{'; '.join(c.show() for c in refused)}")  # fmt: skip
    if allowed:
        log(f"warning: resuming {checkpoint} with changed settings: {'; '.join(c.show() for c in allowed)}")
    return changes


def record_resume(state: dict, changes: list[Change], cfg: TrainConfig) -> dict | None:
    """Note a (re)start in the trainer `state` that every later checkpoint saves: the run's "origin"
    (see `run_origin`; a forced new base or data becomes the origin) and, for forced changes, an entry
    `{"step", "time", "changes": {key: [recorded, requested]}}` in `state["forced"]`. Returns the
    metrics.jsonl record of the changes (`kind="resume"`), or None when nothing changed."""
    state["origin"] = run_origin(cfg)
    if not changes:
        return None
    forced = {c.key: [c.recorded, c.requested] for c in changes if c.rule == "refuse"}
    allowed = {c.key: [c.recorded, c.requested] for c in changes if c.rule == "warn"}
    if forced:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        state.setdefault("forced", []).append({"step": state["step"], "time": stamp, "changes": forced})
    return {"forced": forced, "changed": allowed}


def apply_optimizer_settings(cfg: TrainConfig, optimizer, scheduler) -> None:
    """Set lr (the schedule's base, and the current lr from the schedule of `cfg`), betas and weight
    decay of a restored optimizer from `cfg`.

    `optimizer.load_state_dict` brings back the hyper-parameters it was saved with and `LambdaLR`
    its base lr and last lr, so without this a forced `--optim.lr` would be recorded and not used, and a
    new `max_steps` would take effect one step late. With unchanged settings it sets the values they
    already hold. Group 0 decays, the others do not (`train.trainer.param_groups`).
    """
    flat = flatten(config_to_dict(cfg))
    lr, betas, weight_decay = leaf(flat, "lr"), tuple(leaf(flat, "betas")), leaf(flat, "weight_decay")
    groups = optimizer.param_groups
    scheduler.base_lrs = [lr] * len(groups)
    for i, (group, factor) in enumerate(zip(groups, scheduler.lr_lambdas, strict=True)):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(scheduler.last_epoch)
        group["betas"] = betas
        if i == 0:
            group["weight_decay"] = weight_decay
    scheduler._last_lr = [group["lr"] for group in groups]  # what get_last_lr() reports (and is logged)


def _files_summary(files: list[list], before: list[list] | None = None) -> str:
    total = sum(size or 0 for _, size in files)
    text = f"{len(files)} file(s), {total:,} bytes"
    if before is not None:
        old, new = {tuple(f) for f in before}, {tuple(f) for f in files}
        names_before = {name for name, _ in before}
        added = [n for n, s in files if (n, s) not in old and n not in names_before]
        removed = [n for n, s in before if n not in {name for name, _ in files}]
        changed = [n for n, s in files if (n, s) not in old and n in names_before]
        parts = [
            f"{label} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for label, names in (("added", added), ("removed", removed), ("changed", changed))
            if names
        ]
        if not parts and new == old:
            parts = ["in another order"]
        text += f" ({'; '.join(parts)})" if parts else ""
    return text


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
