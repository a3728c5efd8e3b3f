"""_hub -- a model name to a model directory, as vLLM's LLM(model=...) takes it.

Owns: the lookup of Hugging Face Hub ids (org/name) in huggingface_hub's cache
layout (<cache>/models--org--name/refs/<revision> -> snapshots/<sha>/), and the
fallback of downloading through the pagellm command (`pagellm download`), which
owns the Hub client. A directory that exists always wins.
"""
import os
import re
import shutil
import subprocess

_REPO_ID = re.compile(r"^[A-Za-z0-9_.-]{1,96}/[A-Za-z0-9_.-]{1,96}$")


def cache_dir(override=None):
    """The Hub cache root, in huggingface_hub's order."""
    if override:
        return override
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.environ[var]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "huggingface", "hub")


def _is_repo_id(name):
    return bool(_REPO_ID.match(name)) and "--" not in name and ".." not in name and \
        not any(p[0] in "-." or p[-1] in "-." for p in name.split("/"))


def _cached_snapshot(root, repo_id, revision):
    repo = os.path.join(root, "models--" + repo_id.replace("/", "--"))
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        sha = revision
    else:
        try:
            with open(os.path.join(repo, "refs", revision)) as f:
                sha = f.read().strip()
        except OSError:
            return None, repo
    snap = os.path.join(repo, "snapshots", sha)
    return (snap if os.path.isfile(os.path.join(snap, "config.json")) else None), repo


def _offline():
    v = os.environ.get("HF_HUB_OFFLINE", "")
    return v.upper() in ("1", "ON", "YES", "TRUE")


def find_pagellm_command(library_path=None):
    """The pagellm executable: $PAGELLM, next to the library (a build directory), or PATH."""
    if os.environ.get("PAGELLM"):
        return os.environ["PAGELLM"]
    if library_path:
        d = os.path.dirname(os.path.realpath(library_path))
        for p in (os.path.join(d, "pagellm"), os.path.join(os.path.dirname(d), "bin", "pagellm")):
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return p
    return shutil.which("pagellm")


def resolve_model(name, revision=None, download_dir=None, library_path=None):
    """A model directory for name: the directory itself, else the cached snapshot of the
    Hub id, else (online) the snapshot `pagellm download` fetches."""
    if os.path.isdir(name):
        return name
    if not _is_repo_id(name):
        raise ValueError("model %r: no such directory, and not a Hugging Face Hub id "
                         "(org/name)" % name)
    rev = revision or "main"
    root = cache_dir(download_dir)
    snap, repo = _cached_snapshot(root, name, rev)
    if snap:
        return snap
    if _offline():
        raise FileNotFoundError(
            "model %r (revision %s) is not in the Hugging Face cache (looked in %s) and "
            "HF_HUB_OFFLINE is set" % (name, rev, repo))
    cmd = find_pagellm_command(library_path)
    if not cmd:
        raise FileNotFoundError(
            "model %r is not in the Hugging Face cache (%s), and no pagellm command was found "
            "to download it: run `pagellm download %s`, or pass a model directory"
            % (name, repo, name))
    argv = [cmd, "download", name, "--revision", rev, "--quiet"]
    if download_dir:
        argv += ["--download-dir", download_dir]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise FileNotFoundError("model %r: %s" % (name, r.stderr.strip() or
                                                  "pagellm download failed"))
    path = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if not os.path.isdir(path):
        raise FileNotFoundError("model %r: pagellm download printed no directory" % name)
    return path
