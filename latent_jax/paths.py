"""Local or remote paths: one test for "is this a URL" (gs://, s3://, ...) and one way to turn a
user's path into an `etils.epath.Path` (local paths made absolute, URLs left as they are; never
`os.path.abspath` of a URL, which would make `<cwd>/gs:/bucket/...`)."""

from __future__ import annotations

import os

from etils import epath


def is_remote(path) -> bool:
    """Whether `path` is a URL of an object store rather than a local path."""
    return "://" in os.fspath(path)


def resolve(path) -> epath.Path:
    """An `epath.Path`: absolute for local paths, unchanged for URLs."""
    return epath.Path(path) if is_remote(path) else epath.Path(os.path.abspath(os.fspath(path)))
