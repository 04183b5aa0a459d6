"""Check a whole run request before the first model is built.

Why: a mistake found after an hour of inference costs an hour. Everything that can be checked without a
model is checked here, at the top of `run`, and raised as one `UserError` line (exit 2): numbers, the output
folder, the data root, analysis names and typed options (with did-you-mean), model specs, the executor and
a Ray address (with a connection timeout instead of Ray's minutes of retries), and whether any requested
analysis finds any of its data. Kept apart from the pipeline so the pipeline module can move freely.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import socket
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from beyond_inet import registry
from beyond_inet.errors import UserError

RAY_CONNECT_TIMEOUT_S = 10.0
HUB_PROBE_TIMEOUT_S = 3.0
RESERVED_OPTIONS = {"device"}  # set by the pipeline from --device


def check_int(flag: str, value: int | None, minimum: int, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{flag} must be an integer >= {minimum}, got {value!r}")


def check_out_dir(out: str | os.PathLike | None) -> Path:
    """The output folder exists (or can be created) and is writable; created here."""
    if out is None or not str(out).strip():
        raise UserError("--out is required: the folder for results, report and stored outputs")
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UserError(f"--out {str(p)!r} is a file, not a folder; choose another path")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {str(p)!r} cannot be created ({e.strerror or type(e).__name__})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"--out {str(p)!r} is not writable")
    return p


def check_data_root(data_root: str | None, flag: str = "--data-root") -> None:
    if data_root is None:
        return
    p = Path(data_root)
    if not p.exists():
        raise UserError(f"{flag} {data_root!r} does not exist")
    if not p.is_dir():
        raise UserError(f"{flag} {data_root!r} is a file, not a folder (the folder that holds the datasets)")


def check_options(options: dict[str, Any], analyses: list[str], user_names=()) -> dict[str, Any]:
    """Typed options with the requested analyses' defaults filled in (so the run records every value used).
    `user_names`: the run's own folders (``--dataset``), accepted wherever a dataset name is."""
    raw = {k: v for k, v in options.items() if k not in RESERVED_OPTIONS}
    if set(options) & RESERVED_OPTIONS:
        raise UserError("option 'device' is set by --device, not --option")
    try:
        typed = registry.typed_options(raw)
    except registry.OptionError as e:
        raise UserError(str(e)) from None
    from beyond_inet.data import catalog

    for key, value in typed.items():
        opt = registry.all_options()[key][1]
        if opt.kind in ("dataset", "list[dataset]"):
            for name in value if isinstance(value, list) else [value]:
                head = name.split("/")[0]
                if head not in catalog.ENTRIES and name not in user_names:
                    raise UserError(f"option {key}: unknown dataset {name!r}"
                                    f"{registry.did_you_mean(head, catalog.ENTRIES)} (see `beyond-inet datasets`)")
        if opt.kind == "path" and value is not None:
            check_path_option(key, value)
    full = {o.key: o.default for o in registry.RUN_OPTIONS}
    for a in analyses:
        info = registry.ANALYSES.get(a)
        for o in info.options if info else ():
            full[o.key] = list(o.default) if isinstance(o.default, tuple) else o.default
    full.update(typed)
    return full


def check_logit_scale(value: Any) -> None:
    """A CLIP logit scale is a finite number > 0 (inf made every softmax one-hot; nan/<= 0 failed at build)."""
    if value is None:
        return
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--logit-scale must be a number > 0, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(x) or x <= 0:
        raise UserError(f"--logit-scale must be a finite number > 0, got {value!r}")


# Path options and what they must name; anything else of kind "path" only has to exist.
PATH_OPTIONS = {
    "mvh_raw_data": ("dir", "model-vs-human's raw-data folder (holding cue-conflict/, edge/, silhouette/ with "
                            "*.csv human trials)"),
    "pug_mapping": ("file", "a class_to_imagenet_idx.json file"),
}


def check_path_option(key: str, value: str) -> None:
    """A path option names something that exists and is of the right kind, so the run does not find out
    after inference (mvh_raw_data pointing nowhere silently dropped the human reference)."""
    p = Path(value).expanduser()
    kind, what = PATH_OPTIONS.get(key, ("any", "an existing path"))
    if not p.exists():
        raise UserError(f"option {key}={value!r}: does not exist; expected {what}")
    if kind == "dir" and not p.is_dir():
        raise UserError(f"option {key}={value!r}: is a file; expected {what}")
    if kind == "file" and not p.is_file():
        raise UserError(f"option {key}={value!r}: is a folder; expected {what}")
    if key == "mvh_raw_data" and not any(any((p / sub).glob("*.csv")) for sub in ("cue-conflict", "edge",
                                                                                  "silhouette")):
        raise UserError(f"option {key}={value!r}: holds no human trials; expected {what}")


def known_model_names() -> list[str]:
    """Names a model spec is matched against for did-you-mean (aliases, packaged, timm, open_clip)."""
    from beyond_inet.model_names import names

    return names().all_specs()


def check_model_spec(spec: str) -> None:
    """Fail on a spec no builder understands, or an unknown timm/open_clip name, with a suggestion.
    Answers from the model-name index (no torch import), so a typo costs well under a second."""
    from beyond_inet.model_names import known_prefixes, names, open_clip_arch_known, open_clip_tags, timm_arch_known

    idx = names()
    alias_name, _, alias_suffix = spec.partition("@")
    if alias_name in idx.aliases and alias_suffix in ("", "random"):
        target = idx.aliases[alias_name][0]
    else:
        target = spec
    prefix, sep, rest = target.partition(":")
    if not sep or prefix not in known_prefixes():
        hint = registry.did_you_mean(spec, known_model_names())
        if not hint:
            hint = registry.did_you_mean(f"timm:{spec}", known_model_names())
        raise UserError(f"unknown model spec {spec!r}; use timm:<name>, open_clip:<arch>@<tag>, hf:<repo>, "
                        f"packaged:<name> or an alias ({', '.join(idx.aliases)}){hint}; "
                        f"see `beyond-inet models --search NAME`")
    name, _, suffix = rest.partition("@")
    if prefix == "packaged":
        if name not in idx.packaged:
            raise UserError(f"unknown packaged model {name!r}{registry.did_you_mean(target, known_model_names())} "
                            f"(packaged: {', '.join(idx.packaged)})")
    elif prefix == "timm" and ":" not in name:
        if suffix and suffix != "random" and not os.path.isfile(suffix):
            raise UserError(f"checkpoint {suffix!r} does not exist; pass an existing .safetensors/.pth file "
                            f"(timm:{name}@<path>) or @random")

        if name and not timm_arch_known(name.split(".")[0]):
            archs = [f"timm:{a}" for a in sorted(idx.timm_archs)]
            raise UserError(f"unknown timm model {name!r} in {spec!r}{registry.did_you_mean('timm:' + name, archs)}; "
                            f"see `beyond-inet models --search {name.split('_')[0][:4]}`")
        if suffix and suffix != "random":  # opens, and its keys and shapes fit: no hour of work before a refusal
            from beyond_inet.models.timm_models import check_checkpoint

            check_checkpoint(name, suffix)
    elif prefix == "open_clip" and name:
        if not open_clip_arch_known(name):
            raise UserError(f"unknown open_clip architecture {name!r} in {spec!r}"
                            f"{registry.did_you_mean(target, known_model_names())}; "
                            f"see `beyond-inet models --search {name.split('-')[0]}`")
        if suffix and suffix != "random" and suffix not in (tags := open_clip_tags(name)):
            raise UserError(f"open_clip {name!r} has no pretrained tag {suffix!r}{registry.did_you_mean(suffix, tags)}"
                            f" (tags: {', '.join(tags) or 'none'})")


def needs_hub(spec: str) -> bool:
    """Whether building `spec` may download weights from the Hugging Face Hub."""
    from beyond_inet.models import resolve_alias

    alias = resolve_alias(spec)
    target = alias[0] if alias else spec
    prefix, _, rest = target.partition(":")
    if prefix == "packaged":
        return False
    suffix = rest.partition("@")[2]
    if prefix == "timm" and suffix:  # @random or a local checkpoint
        return False
    return not (prefix == "open_clip" and suffix == "random")


def _resolves(host: str, timeout: float) -> bool:
    """Whether `host` resolves within `timeout` seconds (getaddrinfo has no timeout of its own)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def _hub_constant(value: bool | None) -> bool | None:
    """Set huggingface_hub's offline constant (read from the environment once, at its import) when it is
    imported and `value` is not None; returns its value before (None when not imported)."""
    import sys

    constants = sys.modules.get("huggingface_hub.constants")  # a lazily loaded submodule of huggingface_hub
    if constants is None:
        return None
    old = constants.HF_HUB_OFFLINE
    if value is not None:
        constants.HF_HUB_OFFLINE = value
    return old


@contextlib.contextmanager
def hub_offline(models: list[str]):
    """For the duration of a run, the Hugging Face Hub in offline mode when its host does not resolve.

    Offline mode still loads weights already in the local cache and fails at once, instead of ~60 s of
    retries per file, for weights that are not. The switch is undone when the run ends, so a notebook or
    a long-lived process whose network was down for one run is not left offline for the next. Yields
    whether the Hub is offline for this run."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        yield True
        return
    if not any(needs_hub(m) for m in models):
        yield False
        return
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    if _resolves(host, HUB_PROBE_TIMEOUT_S):
        yield False
        return
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constant = _hub_constant(True)
    try:
        yield True
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before
        # imported during the run: it read "1"; restored to what the environment now says
        _hub_constant(constant if constant is not None else False)


def has_module(name: str) -> bool:
    """Whether `name` can be imported (without importing it)."""
    return importlib.util.find_spec(name) is not None


def check_executor(executor: str, ray_address: str | None) -> None:
    if executor not in ("local", "ray"):
        raise UserError(f"unknown executor {executor!r}; use local or ray")
    if executor == "local":
        if ray_address:
            raise UserError("--ray-address needs --executor ray")
        return
    if not has_module("ray"):
        raise UserError("--executor ray needs Ray: pip install 'beyond-inet[ray]'")
    if ray_address and ray_address not in ("auto", "local"):
        check_ray_address(ray_address)


def check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """The Ray head answers within `timeout` s in all (Ray itself retries for minutes on a wrong address).

    A TCP connect, then one gRPC call in the time left: HOST:PORT is asked for its cluster id over the GCS's
    API; ray://HOST:PORT (Ray Client) gets the client's own first call, a ClusterInfo PING."""
    import time
    from urllib.parse import urlparse

    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(0.1, deadline - time.monotonic())

    client = address.startswith("ray://")
    url = urlparse(address if "://" in address else f"ray://{address}")
    try:
        host, port = url.hostname, url.port
    except ValueError:
        host, port = None, None
    if not host:
        raise UserError(f"--ray-address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    port = port or (10001 if client else 6379)

    def fail(reason: str) -> UserError:
        return UserError(f"--ray-address {address!r}: no Ray head answered at {host}:{port} within {timeout:g} s "
                         f"({reason}); start one with `ray start --head` or fix the address")

    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise fail("timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)) from None
    if client:
        why = _ray_client_answers(host, port, left())
        if why is not None:
            raise fail(why)
        return
    try:
        import grpc
        from ray._private.gcs_utils import create_gcs_channel
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # Ray's internals moved: the TCP check above is what we can do
        return
    channel = create_gcs_channel(f"{host}:{port}")
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=left())
    except grpc.RpcError as e:
        code = e.code() if hasattr(e, "code") else None
        raise fail(f"not a Ray GCS: {code.name if code else type(e).__name__}") from None
    finally:
        channel.close()


def _ray_client_answers(host: str, port: int, timeout: float) -> str | None:
    """None when a Ray Client server at host:port answers a PING within `timeout` s, else why not.

    A TCP accept is not enough: `ray.init("ray://...")` to a port that accepts but is no Ray Client server
    retries for ~40 s and ends in a traceback. The PING is the first call Ray's own client makes; the
    server answers it before any session exists, so the probe starts nothing on the cluster."""
    import time

    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):  # Ray's client would use TLS: TCP check only
        return None
    try:
        import grpc
        from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc
    except ImportError:  # Ray's internals moved: the TCP check is what we can do
        return None
    deadline = time.monotonic() + timeout
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return "connected, but no gRPC answer: not a Ray Client server"
        stub = ray_client_pb2_grpc.RayletDriverStub(channel)
        req = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING)
        try:
            stub.ClusterInfo(req, timeout=max(0.1, deadline - time.monotonic()))
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            return f"not a Ray Client server: {code.name if code else type(e).__name__}"
    finally:
        channel.close()
    return None


def check_data_present(analyses: list[str], ctx) -> None:
    """At least one requested analysis must find at least one of its datasets; else say what was looked for."""
    from beyond_inet.analyses import get_analysis

    wanted: list[str] = []
    for name in analyses:
        a = get_analysis(name)
        reqs = a.requests(ctx)
        own = a.prepare_datasets(ctx)  # read by a per-model step (cka's layer statistics), not requested
        if any(ctx.available(r.dataset) for r in reqs) or any(ctx.available(d) for d in own):
            return
        # An analysis with no part present may request nothing (VTAB): name what it would have used.
        info = registry.ANALYSES.get(name)
        wanted += [r.dataset.split("/")[0] for r in reqs] + own or list(info.datasets if info else ())
    looked = ", ".join(dict.fromkeys(wanted)) or "nothing (no analysis requested any data)"
    where = f"under --data-root {ctx.data_root}" if ctx.data_root else "(no --data-root given)"
    raise UserError(f"none of the datasets the requested analyses need is present {where}; looked for: {looked} "
                    f"(see `beyond-inet datasets --data-root DIR`)")


def check_arguments(models: list[str], analyses: list[str], options: dict[str, Any], *, data_root: str | None,
                    limit: int | None, n_boot: int, seed: int, num_workers: int | None, batch_size: int,
                    logit_scale: float | None, datasets: dict[str, str] | None = None, decisions=(),
                    check_data: bool = False) -> tuple[list[str], dict[str, Any]]:
    """Everything about a run's arguments that can be checked without torch (numbers, names, options, model
    specs from the name index): a mistyped argument is refused in well under a second. With `check_data`
    (a run about to start), a data root holding none of the datasets the analyses need is refused too.
    Returns the analyses resolved and the options typed, with defaults filled in."""
    if not models and not decisions:
        raise UserError("no models given; pass --models SPEC [SPEC ...] (see `beyond-inet models`) or published "
                        "decisions with --decisions FOLDER")
    for d in decisions or ():
        if not Path(d).is_dir():
            raise UserError(f"--decisions {d}: not a folder (model-vs-human raw-data CSVs: <dataset>/<dataset>_"
                            f"<observer>_session-1.csv)")
    check_int("--limit", limit, 1)
    check_int("--bootstrap", n_boot, 1, allow_none=False)
    check_int("--seed", seed, 0, allow_none=False)
    check_int("--workers", num_workers, 0)
    check_int("--batch-size", batch_size, 1, allow_none=False)
    check_logit_scale(logit_scale)
    check_data_root(data_root)
    for spec in models:
        check_model_spec(spec)
    try:
        resolved = registry.resolve_analyses(analyses)
    except registry.OptionError as e:
        raise UserError(str(e)) from None
    typed = check_options(dict(options), resolved, check_user_datasets(datasets))
    if check_data and not datasets:  # a wrong --data-root, the commonest first mistake, before torch loads
        check_data_present(resolved, data_context(data_root, typed, seed, n_boot))
    return resolved, typed


def data_context(data_root: str | None, options: dict[str, Any], seed: int, n_boot: int):
    """The analyses' view of a data root (what is present), for the checks made before a run."""
    from beyond_inet.analyses import Context, load_builtin
    from beyond_inet.data import catalog

    load_builtin()  # analyses registered by code (plugins) are resolved like the built-in ones
    return Context(data_root=data_root, options=options, available=lambda n: catalog.available(n, data_root),
                   parts=lambda n: catalog.parts(n, data_root), seed=seed, n_boot=n_boot)


def validate_run(cfg):
    """Check a `RunConfig`; returns it with analyses resolved and options typed (defaults filled)."""
    from beyond_inet.analyses import load_builtin

    load_builtin()  # analyses registered by code (plugins) are resolved like the built-in ones
    check_int("--workers", cfg.num_workers, 0, allow_none=False)
    user = getattr(cfg, "datasets", None) or {}
    analyses, options = check_arguments(cfg.models, cfg.analyses, cfg.options, data_root=cfg.data_root,
                                        limit=cfg.limit, n_boot=cfg.n_boot, seed=cfg.seed,
                                        num_workers=cfg.num_workers, batch_size=cfg.batch_size,
                                        logit_scale=cfg.logit_scale, datasets=user,
                                        decisions=getattr(cfg, "decisions", ()))
    check_executor(cfg.executor, cfg.ray_address)
    options, found = use_user_datasets(check_user_datasets(user), cfg.options, options, cfg.executor)
    cfg = replace(cfg, analyses=analyses, options=options)
    if found:  # recorded with the run (the report states what each folder is and how it is scored)
        cfg = replace(cfg, user_datasets={d.name: d.as_dict() for d in found})
    check_data_present(analyses, data_context(cfg.data_root, options, cfg.seed, cfg.n_boot))
    check_out_dir(cfg.out)  # last: a rejected run leaves no empty output folder behind
    return cfg


# --- a user's own folders (--dataset NAME=PATH) ----------------------------------------------------------------
# List options that take the user's folders without being asked: which kind of folder each accepts. A user who
# passes --dataset wants it scored by every requested analysis that applies; an option the user set is kept.
USER_DATASET_OPTIONS = {"accuracy_datasets": ("imagenet-subset", "own"), "calibration_datasets": ("imagenet-subset",)}
# Options that read labels as ImageNet classes: a folder with its own classes cannot go there.
IMAGENET_LABEL_OPTIONS = ("calibration_datasets", "error_consistency_datasets")


def check_user_datasets(datasets) -> dict[str, str]:
    """{name: folder} of ``--dataset NAME=PATH`` (a dict or NAME=PATH strings): syntax, name clashes and paths
    checked without reading the folders (cheap, torch-free)."""
    from beyond_inet.data import catalog
    from beyond_inet.data.user import normalize_datasets

    return normalize_datasets(datasets, catalog.ENTRIES)


def use_user_datasets(user: dict[str, str], raw_options: dict[str, Any], options: dict[str, Any],
                      executor: str = "local") -> tuple[dict[str, Any], list]:
    """Read the user's folders (every layout problem is one line here, before any model is built), make them
    known to the catalog for this run, warn about small classes, and add them to the dataset options the user
    did not set. Returns the options with the folders in, and the inspected folders (``data.user.UserDataset``)."""
    import sys

    from beyond_inet.data import catalog
    from beyond_inet.data.user import inspect

    found = [inspect(n, p) for n, p in user.items()]
    if found and executor == "ray":
        raise UserError("--dataset runs with --executor local only (Ray workers open datasets by catalog name)")
    catalog.set_user_datasets(found)
    out = dict(options)
    for key, kinds in USER_DATASET_OPTIONS.items():
        if key in out and key not in raw_options:
            out[key] = list(out[key]) + [d.name for d in found if d.kind in kinds and d.name not in out[key]]
    for key in IMAGENET_LABEL_OPTIONS:
        own = [n for n in (out.get(key) or []) if catalog.own_label_space(n)]
        if own:
            raise UserError(f"option {key}: {own[0]!r} has class folders of its own (not ImageNet classes), so "
                            f"its labels cannot be scored as ImageNet classes; name the folders by ImageNet wnids "
                            f"or class names, or leave it out of {key}")
    for d in found:
        for w in d.warnings:
            print(f"beyond-inet: warning: {w}", file=sys.stderr)
    return out, found
