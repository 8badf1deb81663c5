"""Pretrained weights: the local hub cache, a quick offline check, and reading a weights file safely.

No read here runs code from a file: a torch file is read with `torch.load(weights_only=True)`
(explicit, so `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` cannot turn it off), a `.safetensors` file with
safetensors, and TorchScript archives are refused.
"""

from __future__ import annotations

import os
import re
import threading
import warnings

from zipfast.errors import UserError

HUB_TIMEOUT_S = 2.0  # the offline check waits this long for the hub (or the proxy) to answer
_SAFE_NAME = "open_clip_model.safetensors"  # open_clip tries it before the default .bin (pretrained.py)
_DEFAULT_NAME = "open_clip_pytorch_model.bin"
_FILE_KINDS = "a state_dict file (.safetensors, or .pt/.pth/.bin saved with torch.save)"


class ModelLoadError(UserError):
    """A model name, tag or weights file that cannot be loaded."""


def short(text: str, limit: int = 160) -> str:
    """`text` on one line, cut at a sentence end or a space (never mid-word) to at most `limit` chars."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = cut.rfind(". ")
    if end > limit // 2:
        return cut[:end + 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip(",;:") + " …"


# ------------------------------------------------------------------ tags: the cache and the network


def hub_files(name: str, tag: str) -> tuple[str, list[str]]:
    """(hub repo id, file names open_clip tries in order) for pretrained tag `tag` of model `name`."""
    import open_clip

    repo, filename = os.path.split(open_clip.get_pretrained_cfg(name, tag).get("hf_hub", ""))
    if not filename:
        return repo, [_SAFE_NAME, _DEFAULT_NAME]
    if filename.endswith((".bin", ".pth")):
        return repo, [filename[:-4] + ".safetensors", filename]
    return repo, [filename]


def cached_tag_file(name: str, tag: str) -> str | None:
    """The weights file of `tag` on this machine: the local file its pretrained config names, or the
    one already in the local Hugging Face cache; None if neither (no network used)."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    local = (open_clip.get_pretrained_cfg(name, tag) or {}).get("file")
    if local and os.path.isfile(local):
        return local
    repo, files = hub_files(name, tag)
    if not repo:
        return None
    for filename in files:
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def hub_unreachable(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be asked now (HF_HUB_OFFLINE, no answer within `timeout` s), or None.

    One HEAD request through the proxies the environment sets, in a thread so that a DNS lookup
    cannot hang it: any HTTP status or TLS reply counts as an answer; refused, unresolved or silent
    is offline. The hub client itself retries for about a minute before it gives up.
    """
    import huggingface_hub.constants as hf

    if hf.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE=1 is set"
    import ssl
    import urllib.error
    import urllib.request

    url, outcome = hf.ENDPOINT, {}
    opener = urllib.request.build_opener()  # the proxies set now (urlopen keeps the first ones it saw)

    def ask():
        try:
            opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # a status code: something answered
        except Exception as e:  # noqa: BLE001 (every failure to connect means the same: offline)
            reason = getattr(e, "reason", e)
            if not isinstance(reason, (ssl.SSLError, ssl.CertificateError)):
                outcome["why"] = short(f"{type(reason).__name__}: {reason}", 80)
        outcome["done"] = True

    worker = threading.Thread(target=ask, name="zipfast-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if not outcome.get("done"):
        return f"{url} did not answer within {timeout:g} s"
    return f"{url} cannot be reached ({outcome['why']})" if "why" in outcome else None


def offline_error(name: str, tag: str, why: str) -> ModelLoadError:
    """The one error for a tag that is not cached while the hub cannot be reached."""
    repo, files = hub_files(name, tag)
    where = f"{files[-1]} from https://huggingface.co/{repo}" if repo else "its weights file"
    return ModelLoadError(
        f"pretrained weights {tag!r} of {name} are not in the local cache and cannot be downloaded: {why}. "
        f"Download {where} on a machine with internet access, then pass the file: --pretrained /path/to/{files[-1]} "
        f"(pretrained=path in the Python API)"
        + ("; or unset HF_HUB_OFFLINE where the hub is reachable" if "HF_HUB_OFFLINE" in why else ""))


def fetch_error(name: str, tag: str, exc: BaseException) -> ModelLoadError:
    """The error for a tag whose download failed although the hub answered."""
    cause, seen = exc, {id(exc)}
    while (cause.__cause__ or cause.__context__) is not None:  # the innermost says why
        cause = cause.__cause__ or cause.__context__
        if id(cause) in seen:
            break
        seen.add(id(cause))
    repo, files = hub_files(name, tag)
    return ModelLoadError(
        f"could not download pretrained weights {tag!r} of {name} from https://huggingface.co/{repo} "
        f"({type(cause).__name__}: {short(cause, 120)}). Download {files[-1]} elsewhere and pass the file: "
        f"--pretrained /path/to/{files[-1]} (pretrained=path in the Python API)")


# ------------------------------------------------------------------ reading a weights file


def _sniff(path: str) -> str:
    """"zip" (torch.save), "pickle" (legacy torch.save), "safetensors" or "unknown", from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    size = os.path.getsize(path)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    return "unknown"


def _torch_cause(e: Exception) -> str:
    """Why torch.load refused a file, without torch's advice to retry with weights_only=False
    (which would run code from the file)."""
    text = str(e)
    if text.startswith("Weights only load failed") or "WeightsUnpickler" in text:
        detail = text.split("trusted source.", 1)[-1].split("Check the documentation", 1)[0]
        detail = re.sub(r".*WeightsUnpickler error:", "", detail, flags=re.S)
        code = re.search(r"GLOBAL ([\w.]+)", detail)
        if code:
            return f"it refers to Python code ({code.group(1)}), which zipfast never runs"
        return f"it holds more than tensors ({short(detail, 80)}); zipfast never runs code from a file"
    if "TorchScript" in text:
        return "it is a TorchScript archive (OpenAI's original .pt?), which holds code"
    if "zip archive" in text or "central directory" in text:
        return "a damaged or truncated zip archive"
    kept = [s for s in re.split(r"(?<=\.)\s+", text) if not re.search(r"weights_only|arbitrary code|trusted", s)]
    if not kept:
        return f"torch.load refused it ({type(e).__name__})"
    return f"{type(e).__name__}: {short(' '.join(kept), 100)}"


def read_state_dict(path: str) -> dict:
    """The tensors of weights file `path` ({name: tensor}); ModelLoadError naming the file otherwise."""
    import torch

    def refuse(why):
        return ModelLoadError(f"weights file {path!r} is not a readable weights file: {why}. Pass "
                              f"{_FILE_KINDS}, an open_clip tag, or none")

    if not os.path.isfile(path):
        raise refuse("it is a directory" if os.path.isdir(path) else "it is not a regular file")
    try:
        kind = _sniff(path)
    except OSError as e:
        raise refuse(f"cannot read it ({e.strerror or e})") from e
    if kind == "unknown":
        raise refuse("it is neither a safetensors file nor a torch.save file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols and TorchScript: not the user's
            if kind == "safetensors":
                from safetensors.torch import load_file

                obj = load_file(path, device="cpu")
            else:
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (every failure here is the file's)
        cause = short(e, 100) if kind == "safetensors" else _torch_cause(e)
        raise refuse(cause) from None  # torch's own message advises weights_only=False: not shown
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise refuse(f"it holds {'an empty dict' if isinstance(obj, dict) else 'a ' + type(obj).__name__}, "
                     "not a state_dict")
    bad = next((k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise refuse(f"its entry {str(bad)[:60]!r} is a {type(obj[bad]).__name__}, not a tensor")
    if all(k.startswith("module.") for k in obj):  # saved from a DataParallel/DDP wrapper
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


# ------------------------------------------------------------------ does a file fit a model


def _as_open_clip(model, sd: dict) -> dict:
    """open_clip's own renames of a state_dict for `model` (factory.load_checkpoint, open_clip 3.3),
    short of resizing position embeddings, which `load_state_dict` does after the fit check."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    sd = convert_state_dict(model, dict(sd))
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    for key in ("logit_scale", "logit_bias"):
        own = getattr(model, key, None)
        if key in sd and own is not None and own.ndim != sd[key].ndim and sd[key].numel() == own.numel():
            sd[key] = sd[key].reshape(own.shape)
    if "logit_bias" not in sd and getattr(model, "logit_bias", None) is not None and "logit_scale" in sd:
        import torch

        sd["logit_bias"] = torch.zeros_like(sd["logit_scale"])
    if not hasattr(model, "text.transformer.embeddings.position_ids"):
        sd.pop("text.transformer.embeddings.position_ids", None)
    return sd


# open_clip interpolates these to the model's length (another image or context size): only their width must fit
_RESIZED = ("visual.positional_embedding", "positional_embedding", "text.positional_embedding")


def _misfit(shapes: dict, sd: dict) -> list[str]:
    """What keeps state_dict `sd` from loading into a model of parameter shapes `shapes` ([] if nothing)."""
    out = []
    for key, want in shapes.items():
        if key not in sd:
            out.append(f"{key} is missing from the file")
            continue
        have = tuple(sd[key].shape)
        if have != want and not (key in _RESIZED and len(have) == len(want) == 2 and have[1] == want[1]):
            out.append(f"shape mismatch of {key}: file has {list(have)}, model has {list(want)}")
    extra = [k for k in sd if k not in shapes]
    if extra:
        out.append(f"{extra[0]} is not in the model" + (f" (and {len(extra) - 1} more keys)" if len(extra) > 1 else ""))
    return out


def _shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _buildable(cfg: dict | None) -> bool:
    """A CLIP config of open_clip's own towers (not timm, Hugging Face or CoCa)."""
    return bool(cfg) and "timm_model_name" not in cfg.get("vision_cfg", {}) \
        and "hf_model_name" not in cfg.get("text_cfg", {}) and "multimodal_cfg" not in cfg


def _config_shapes(name: str) -> dict | None:
    """Parameter shapes of open_clip config `name`, built on the meta device (no memory, no init);
    None for configs with a timm or Hugging Face tower (building those may need the network)."""
    import open_clip
    import torch

    cfg = open_clip.get_model_config(name)
    if not _buildable(cfg):
        return None
    cls = open_clip.CustomTextCLIP if cfg.pop("custom_text", False) else open_clip.CLIP
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _shapes(cls(**cfg))
    except Exception:  # noqa: BLE001 (a config this check cannot build is just not a candidate)
        return None


def _layers(sd: dict, prefix: str) -> int | None:
    idx = {k[len(prefix):].split(".", 1)[0] for k in sd if k.startswith(prefix)}
    return len(idx) or None


def _signature(sd: dict) -> dict:
    """What a state_dict says of its config, as (config section, key) → value, read from shapes."""
    sig = {}
    for key, section, field, dim in (("text_projection", None, "embed_dim", -1),
                                     ("token_embedding.weight", "text_cfg", "width", -1),
                                     ("token_embedding.weight", "text_cfg", "vocab_size", 0),
                                     ("visual.conv1.weight", "vision_cfg", "width", 0),
                                     ("visual.conv1.weight", "vision_cfg", "patch_size", -1)):
        t = sd.get(key)
        if section == "vision_cfg" and "visual.class_embedding" not in sd:
            continue  # a ResNet's conv1 is its stem, not a patch embedding
        if t is not None and t.ndim >= 2:
            sig[section, field] = t.shape[dim]
    sig["text_cfg", "layers"] = _layers(sd, "transformer.resblocks.")
    sig["vision_cfg", "layers"] = _layers(sd, "visual.transformer.resblocks.")
    return sig


def guess_model(sd: dict, exclude: str = "", limit: int = 12) -> list[str]:
    """open_clip models (zipfast's configs first) that the state_dict `sd` fits.

    Cheap: only configs whose widths, vocabulary, patch size and layer counts match the file's
    shapes are built, on the meta device, at most `limit` of them; exact fits are named first."""
    from pathlib import Path

    import open_clip

    sig = {k: v for k, v in _signature(sd).items() if v is not None}
    own = sorted(p.stem for p in (Path(__file__).parent / "model_configs").glob("*.json"))
    candidates = []
    for name in [*own, *sorted(set(open_clip.list_models()) - set(own), key=lambda n: ("quickgelu" in n, n))]:
        cfg = open_clip.get_model_config(name)
        if not _buildable(cfg) or name == exclude or name.removesuffix("-quickgelu") in candidates:
            continue  # a -quickgelu config has its plain twin's shapes: the plain one is named
        if all((cfg.get(section, {}) if section else cfg).get(field, value) == value
               for (section, field), value in sig.items()):
            candidates.append(name)
    fits = []
    for name in candidates[:limit]:
        shapes = _config_shapes(name)
        if shapes is not None and not _misfit(shapes, sd):
            exact = all(tuple(sd[k].shape) == v for k, v in shapes.items())
            fits.insert(len([f for f in fits if f[1]]) if exact else len(fits), (name, exact))
    return [name for name, _ in fits]


def load_state_dict(model, sd: dict, name: str, path: str) -> None:
    """Load the tensors of weights file `path` into `model` (open_clip `name`); a file made for
    another model is refused naming both (and which known model it fits, if one does)."""
    from open_clip.model import resize_pos_embed, resize_text_pos_embed

    sd = _as_open_clip(model, sd)
    problems = _misfit(_shapes(model), sd)
    if problems:
        fits = guess_model(sd, exclude=name)
        looks = f"; it looks like weights of {' or '.join(fits[:3])}" if fits else ""
        raise ModelLoadError(f"weights file {path!r} does not fit model {name}: {problems[0]}"
                             f"{f' (and {len(problems) - 1} more differences)' if len(problems) > 1 else ''}{looks}. "
                             f"Pass the --model these weights were made for, or weights made for {name}")
    resize_pos_embed(sd, model)
    resize_text_pos_embed(sd, model)
    model.load_state_dict(sd, strict=True)
