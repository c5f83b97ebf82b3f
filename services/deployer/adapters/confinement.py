"""What a candidate process may have: an unprivileged OS user of its own (when the deployer is root) and an
allow-listed environment. Nothing of the deployer's own environment (its Kafka password, database URL, RG_*
settings) reaches candidate code."""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from services.deployer.adapters.bundle_tree import remove_tree
from services.deployer.domain import DeployError

# What a candidate inherits from the deployer's environment; everything else it gets is named in candidate_env.
INHERITED = ("PATH", "LANG", "LC_ALL")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
log = structlog.get_logger()


@dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int


def candidate_env(
    parent: Mapping[str, str], shop: Mapping[str, str], instance: Mapping[str, str], home: Path, path: str | None = None
) -> dict[str, str]:
    """A candidate's whole environment: PATH and locale, its own HOME and TMPDIR, and the SHOP_* settings of
    `shop` (the environment's) and `instance` (port, id...); anything else in them is dropped."""
    env = {name: parent[name] for name in INHERITED if name in parent}
    env["PATH"] = path or env.get("PATH") or DEFAULT_PATH
    env |= {"HOME": str(home), "TMPDIR": str(home / "tmp"), "PYTHONDONTWRITEBYTECODE": "1"}
    env |= {name: value for name, value in {**shop, **instance}.items() if name.startswith("SHOP_")}
    return env


@functools.cache
def candidate_user(name: str) -> RunAs | None:
    """The unprivileged user candidates run as, created if missing; None (with a warning, once) when the deployer
    is not root and so cannot switch users."""
    if os.geteuid() != 0:
        log.warning(
            "deployer is not root: candidates run as the deployer's own user, not as an unprivileged one",
            candidate_user=name,
        )
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )
        if made.returncode != 0 and made.returncode != 9:  # 9: created meanwhile by someone else
            raise DeployError(f"cannot create the candidate user {name}: {made.stderr.strip()}") from None
        entry = pwd.getpwnam(name)
    return RunAs(name, entry.pw_uid, entry.pw_gid)


def as_user(user: RunAs, command: list[str]) -> list[str]:
    """`command` run as `user` with its own groups, and no setuid escalation."""
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--no-new-privs", "--", *command]


def unreachable(program: str, env: Mapping[str, str], user: RunAs) -> str | None:
    """Why `user` cannot run `program` from the candidate's PATH (None if it can): an interpreter under a private
    home (say a root pyenv) would otherwise fail the start with a bare `Permission denied`."""
    found = shutil.which(program, path=env.get("PATH"))
    if found is None:
        return f"{program} is not on the candidates' PATH {env.get('PATH')}"
    if subprocess.run(as_user(user, ["test", "-x", found]), env=dict(env), capture_output=True).returncode != 0:
        return (
            f"{found} is not executable by {user.name}: install the candidates' runtime where {user.name} can "
            "read it and point RG_CANDIDATE_PATH at it"
        )
    return None


def private_home(home: Path, user: RunAs | None) -> Path:
    """A fresh HOME (with its tmp/) for one instance, writable only by the user it runs as."""
    remove_tree(home)
    (home / "tmp").mkdir(parents=True)
    for path in (home, home / "tmp"):
        path.chmod(0o700)
        if user is not None:
            os.chown(path, user.uid, user.gid)
    return home
