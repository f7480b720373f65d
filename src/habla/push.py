"""`habla push`: the merged model folder and its evaluated card to a Hugging Face hub repo.

In: models/merged (what merge wrote) and reports/model_card.md (what evaluate wrote for that
same folder), a repo id, private or not, and an `HfApi` (the real one, or a stand-in in tests).
Out: the repo (created if needed) holding the folder in one commit, with the evaluated card as
its README.md and the local folder path in the card's examples replaced by the repo id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from habla import paths
from habla.errors import HablaError, describe
from habla.model_folder import has_info
from habla.modelcard import DIGEST, folder_digest

REPO_ID_HELP = "user/name or org/name"


class PushError(HablaError, RuntimeError):
    """A folder, card or repo id that cannot be pushed; the message says which and the fix."""


def check(repo_id: str, folder: Path = paths.MERGED, card: Path = paths.MODEL_CARD) -> str:
    """The card text to upload, after checking the repo id, the folder and that the card was
    written for this very folder (else the hub would show another model's results)."""
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo_id):
        raise PushError(f"push: '{repo_id}' is not a hub repo id ({REPO_ID_HELP})")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:  # the hub's own rules ('../x', '-/-', 'ñandú/modelo' pass the split above)
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PushError(f"push: '{repo_id}' is not a hub repo id: {exc}") from None
    if not folder.is_dir() or not has_info(folder):
        raise PushError(f"push: {folder} is not a merged habla model folder (run `dvc repro` "
                        "to make it)")
    if not card.is_file():
        raise PushError(f"push: {card} is missing: it is the evaluated model card (run "
                        "`dvc repro evaluate` first)")
    try:
        text = card.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PushError(f"push: {card} cannot be read ({type(exc).__name__}: {exc}); rerun "
                        "`dvc repro evaluate` to write it again") from None
    found = DIGEST.search(text)
    if found is None or found.group(1) != folder_digest(folder):
        raise PushError(f"push: {card} was written for another version of {folder} (run "
                        "`dvc repro evaluate` to evaluate the current one)")
    # the card's examples load the local folder; on the hub they load the repo
    return text.replace(folder.as_posix(), repo_id)


def push(repo_id: str, private: bool = False, folder: Path = paths.MERGED,
         card: Path = paths.MODEL_CARD, api: Any = None) -> dict[str, Any]:
    """Create `repo_id` if needed and upload `folder` with the evaluated card as README.md,
    in one commit; returns the repo URL, the commit and the files uploaded."""
    text = check(repo_id, folder, card)
    from huggingface_hub import CommitOperationAdd, HfApi

    api = api if api is not None else HfApi()
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and p.relative_to(folder).as_posix() != "README.md")
    ops = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(),
                              path_or_fileobj=str(p)) for p in files]
    ops.append(CommitOperationAdd(path_in_repo="README.md",
                                  path_or_fileobj=text.encode("utf-8")))
    try:
        url = api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        info = api.create_commit(repo_id, ops, repo_type="model",
                                 commit_message=f"habla push: {folder.as_posix()}")
    except Exception as exc:  # auth, network, a name taken by someone else: say which
        raise PushError(f"push: uploading to {repo_id} failed: {describe(exc)} "
                        "(check the network, and that you are logged in: `hf auth login` or "
                        "HF_TOKEN)") from None
    return {"repo": str(url), "commit": getattr(info, "oid", None),
            "files": len(ops), "private": private}
