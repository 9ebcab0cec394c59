"""Run a Deployment's container as a local process, the way kubelet would start it.

No cluster here, so the parts of a pod that decide whether the exporter works are reproduced
with the kernel's own tools (root needed, as on CI):

- volumes: Secret and projected volumes are written in kubelet's layout (each file a symlink
  through `..data` to a dated directory), with the volume's defaultMode and the pod's fsGroup
  as group; emptyDirs are empty and world-writable;
- a private mount namespace (`unshare --mount`) binds each volume at its exact mountPath, makes
  readOnly mounts read-only, and with readOnlyRootFilesystem remounts / read-only;
- `setpriv` runs the process as runAsUser/runAsGroup with fsGroup as supplementary group,
  no_new_privs (allowPrivilegeEscalation: false) and every capability dropped;
- env: the container's env with Secret values filled in.

One thing differs, because this machine is shared and tests stay on loopback: the caller
passes the listen address to use instead of the manifest's (CE_HOST/CE_PORT).
"""

from __future__ import annotations

import os
import shlex
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
Secrets = dict[str, dict[str, bytes]]
REPO = Path(__file__).resolve().parents[2]


def kubelet_layout(mount: Path, files: dict[str, bytes], mode: int, group: int | None) -> None:
    """A Secret volume as kubelet writes it: name -> ..data/name -> ..<timestamp>/name."""
    stamp = mount / "..2026_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    for name, content in files.items():
        path = stamp / name
        path.write_bytes(content)
        path.chmod(mode)
        if group is not None:
            os.chown(path, 0, group)
        (mount / name).symlink_to(Path("..data") / name)
    (mount / "..data").symlink_to(stamp.name)


def secret_files(volume: Obj, secrets: Secrets) -> tuple[dict[str, bytes], int]:
    """(path in the volume -> content, file mode) of a secret or projected volume."""
    if "secret" in volume:
        spec = volume["secret"]
        sources = [spec]
        name_key = "secretName"
    else:
        spec = volume["projected"]
        sources = [s["secret"] for s in spec["sources"]]
        name_key = "name"
    files = {}
    for source in sources:
        secret = secrets[source[name_key]]
        items = source.get("items") or [{"key": k, "path": k} for k in secret]
        for item in items:
            files[item["path"]] = secret[item["key"]]
    return files, int(spec.get("defaultMode", 0o644))


def materialise_volumes(pod: Obj, container: Obj, secrets: Secrets, root: Path) -> dict[str, Path]:
    """mountPath -> a local directory holding what kubelet would mount there."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    fs_group = pod.get("securityContext", {}).get("fsGroup")
    mounts = {}
    for index, mount in enumerate(container.get("volumeMounts", [])):
        volume = volumes[mount["name"]]
        local = root / f"volume-{index}-{mount['name']}"
        local.mkdir(parents=True)
        if "emptyDir" in volume:
            local.chmod(0o777)
        elif "secret" in volume or "projected" in volume:
            files, mode = secret_files(volume, secrets)
            kubelet_layout(local, files, mode, fs_group)
        else:
            raise AssertionError(f"volume type not reproduced here: {volume}")
        mounts[mount["mountPath"]] = local
    return mounts


def container_env(container: Obj, secrets: Secrets) -> dict[str, str]:
    """The container's env as the process sees it, Secret references resolved."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]].decode()
        else:
            env[item["name"]] = item["value"]
    return env


def _security(pod: Obj, container: Obj, key: str) -> Any:
    return container.get("securityContext", {}).get(key, pod.get("securityContext", {}).get(key))


def closed_directories(paths: list[Path]) -> list[Path]:
    """Directories on the way to `paths` that other users cannot enter (e.g. a Python built
    under /root): the image's user can read its own code, so the sandbox opens these."""
    closed = []
    for path in paths:
        for directory in [*reversed(path.parents), path]:
            if directory.stat().st_mode & 0o005 != 0o005 and directory not in closed:
                closed.append(directory)
    return closed


def sandbox_script(pod: Obj, container: Obj, mounts: dict[str, Path], scratch: Path) -> str:
    """Shell lines that set up the mount namespace, then exec setpriv."""
    lines = ["set -e"]
    overlaid: set[Path] = set()
    code = [Path(sys.base_prefix), Path(sys.prefix), REPO]
    for index, directory in enumerate(closed_directories(code)):
        # An overlay, so the chmod lands in a scratch layer and never on the host.
        upper, work = scratch / f"open-upper{index}", scratch / f"open-work{index}"
        upper.mkdir(parents=True)
        work.mkdir(parents=True)
        options = f"lowerdir={directory},upperdir={upper},workdir={work}"
        lines.append(f"mount -t overlay overlay -o {options} {shlex.quote(str(directory))}")
        lines.append(f"chmod o+rx {shlex.quote(str(directory))}")
        lines.append(f"mount -o remount,ro {shlex.quote(str(directory))}")
    for mount_path in mounts:
        target = Path(mount_path)
        if not target.exists():
            # The mount point is created in an overlay, never in the host's directories.
            ancestor = next(p for p in target.parents if p.exists())
            assert ancestor != Path("/"), f"cannot create {target} without touching /"
            if ancestor not in overlaid:
                upper, work = scratch / f"upper{len(overlaid)}", scratch / f"work{len(overlaid)}"
                upper.mkdir(parents=True)
                work.mkdir(parents=True)
                options = f"lowerdir={ancestor},upperdir={upper},workdir={work}"
                lines.append(f"mount -t overlay overlay -o {options} {ancestor}")
                overlaid.add(ancestor)
            lines.append(f"mkdir -p {shlex.quote(mount_path)}")
    read_only = {m["mountPath"] for m in container.get("volumeMounts", []) if m.get("readOnly")}
    for mount_path, local in mounts.items():
        # A checkout or venv under a volume's path (a clone in /tmp, where the pod mounts its
        # /tmp volume) would be hidden by it: bind the code into the volume's directory first,
        # and carry that along (--rbind). The image has its code elsewhere; this is the test's.
        for directory in code:
            if directory.is_relative_to(mount_path):
                nested = local / directory.relative_to(mount_path)
                nested.mkdir(parents=True, exist_ok=True)
                lines.append(
                    f"mount --bind {shlex.quote(str(directory))} {shlex.quote(str(nested))}"
                )
        lines.append(f"mount --rbind {shlex.quote(str(local))} {shlex.quote(mount_path)}")
        if mount_path in read_only:
            lines.append(f"mount -o remount,bind,ro {shlex.quote(mount_path)}")
    for ancestor in overlaid:
        lines.append(f"mount -o remount,ro {ancestor}")
    if _security(pod, container, "readOnlyRootFilesystem"):
        lines.append("mount -o remount,bind,ro /")
    return "\n".join(lines)


def setpriv_args(pod: Obj, container: Obj) -> list[str]:
    uid, gid = _security(pod, container, "runAsUser"), _security(pod, container, "runAsGroup")
    assert uid is not None and gid is not None, "runAsUser and runAsGroup must be set"
    fs_group = pod.get("securityContext", {}).get("fsGroup")
    groups = ["--groups", str(fs_group)] if fs_group is not None else ["--clear-groups"]
    args = ["setpriv", "--reuid", str(uid), "--regid", str(gid), *groups]
    if _security(pod, container, "allowPrivilegeEscalation") is False:
        args.append("--no-new-privs")
    dropped = container.get("securityContext", {}).get("capabilities", {}).get("drop", [])
    if "ALL" in dropped:
        args += ["--inh-caps=-all", "--bounding-set=-all"]
    return args


class PodProcess:
    """The exporter started as the container would start it (the image's entrypoint, no
    arguments), inside the sandbox above. Stop it with terminate_pid(self.proc.pid).

    `command` replaces the entrypoint (as `kubectl exec` would run it in the container), for
    tests that check the sandbox itself."""

    def __init__(
        self,
        pod: Obj,
        container: Obj,
        env: dict[str, str],
        mounts: dict[str, Path],
        root: Path,
        command: list[str] | None = None,
    ) -> None:
        if os.geteuid() != 0:
            raise AssertionError("reproducing a pod needs root (mount namespace, setpriv)")
        self.log = root / "container.log"
        script = sandbox_script(pod, container, mounts, root / "overlay")
        # The image's ENTRYPOINT is `celery-exporter`: here the checkout's code and venv.
        command = command or [sys.executable, "-m", "celery_exporter"]
        entry = [*setpriv_args(pod, container), *command]
        script += "\nexec " + " ".join(map(shlex.quote, entry))
        # The image's ENV, then the container's.
        base = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(REPO / "src"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                env={**base, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def probe(self, probe: Obj, port: int) -> int:
        """An httpGet probe as kubelet sends it: its scheme and path, the certificate not
        checked, no credentials. The status, or 0 when nothing answers."""
        get = probe["httpGet"]
        scheme = get.get("scheme", "HTTP").lower()
        context = ssl._create_unverified_context() if scheme == "https" else None
        url = f"{scheme}://127.0.0.1:{port}{get['path']}"
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            if self.proc.poll() is not None:
                raise AssertionError(f"the container exited:\n{self.output()}") from None
            return 0


def probe_port(container: Obj, probe: Obj) -> int:
    """The containerPort a probe's port (a name or a number) resolves to."""
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    port = probe["httpGet"]["port"]
    return int(ports[port] if isinstance(port, str) else port)
