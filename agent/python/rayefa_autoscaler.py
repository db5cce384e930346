"""rayefa's node provider for Ray's autoscaler.

Ray loads it on the head from the autoscaling configuration the rayefa agent writes:

    provider:
        type: external
        module: rayefa_autoscaler.RayefaNodeProvider
        disable_node_updaters: true
        rayefa_binary: /path/to/rayefa
        cluster_file: /path/to/cluster.yaml
        state_dir: /var/lib/rayefa-orchestrator   # optional: rayefa's RAYEFA_STATE_DIR

On EC2 the head's user data installs rayefa and writes the cluster file and the cluster's
control secret (under ``state_dir``) for this module; rayefa then acts with the instance's
role.

Every operation runs the rayefa binary (``rayefa nodes ...``), which launches nodes exactly as
``rayefa up`` does and prints JSON: this module holds no launch logic of its own. With the
node updaters disabled Ray never SSHes into a node; the node's ``ray-node-status`` follows
what its agent reports instead: ``waiting-for-ssh`` until the agent answers, ``setting-up``
while it bootstraps, ``up-to-date`` once it is ready, ``update-failed`` when a step failed.

Only the standard library and Ray are imported; Python 3.9 or later.
"""

import json
import logging
import os
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional

try:
    from ray.autoscaler.node_provider import NodeProvider
except ImportError:  # the unit tests run without Ray

    class NodeProvider:  # type: ignore[no-redef]
        def __init__(self, provider_config, cluster_name):
            self.provider_config = provider_config
            self.cluster_name = cluster_name


logger = logging.getLogger(__name__)

# Ray's tag names and values (ray.autoscaler.tags), spelled out so that the module imports
# without Ray for its unit tests.
TAG_NODE_KIND = "ray-node-type"
TAG_USER_NODE_TYPE = "ray-user-node-type"
TAG_NODE_STATUS = "ray-node-status"
TAG_CLUSTER_NAME = "ray-cluster-name"
TAG_NODE_NAME = "ray-node-name"

# What the agent's state means to Ray's autoscaler.
STATUS_OF_AGENT_STATE = {
    "unreachable": "waiting-for-ssh",
    "bootstrapping": "setting-up",
    "ready": "up-to-date",
    "failed": "update-failed",
}

# A listing is reused for this long: Ray asks for tags and addresses node by node, many times
# per update, and each listing starts a process.
CACHE_SECONDS = 1.0

# How long one rayefa command may take (a launch on EC2 waits for RunInstances).
COMMAND_TIMEOUT_SECONDS = 300

# Variables of the head's Ray that must not reach the nodes rayefa starts: on one machine (the
# local provider) a new node would otherwise start Ray with the head's settings.
INHERITED_PREFIXES = ("RAY_", "RAYEFA_LOCAL_NODE", "RAYEFA_NODE_ADDRESS")


class RayefaError(RuntimeError):
    """A rayefa command failed; the message carries its exit status and output."""


class RayefaNodeProvider(NodeProvider):
    """Launches, lists and terminates nodes through ``rayefa nodes``."""

    def __init__(self, provider_config: Dict[str, Any], cluster_name: str) -> None:
        NodeProvider.__init__(self, provider_config, cluster_name)
        for key in ("rayefa_binary", "cluster_file"):
            if not provider_config.get(key):
                raise ValueError(f"provider.{key} is missing from the autoscaling config")
        self.binary = provider_config["rayefa_binary"]
        self.cluster_file = provider_config["cluster_file"]
        self.state_dir = provider_config.get("state_dir")
        self._lock = threading.RLock()
        self._nodes: Dict[str, Dict[str, Any]] = {}
        self._listed_at = 0.0
        self._reported_failures = set()

    # The process seam.

    def _run(self, *args: str) -> Any:
        command = [self.binary, "nodes", *args]
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(INHERITED_PREFIXES)
        }
        if self.state_dir:
            # Where the cluster's control secret is: every node rayefa adds gets it.
            env["RAYEFA_STATE_DIR"] = self.state_dir
        try:
            done = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                timeout=COMMAND_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RayefaError(f"{' '.join(command)}: {error}") from error
        if done.returncode != 0:
            raise RayefaError(
                f"{' '.join(command)} exited {done.returncode}: "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        try:
            return json.loads(done.stdout)
        except ValueError as error:
            raise RayefaError(f"{' '.join(command)} printed no JSON: {error}") from error

    # Listing, cached.

    def _refresh(self, force: bool = False) -> Dict[str, Dict[str, Any]]:
        with self._lock:
            if force or time.monotonic() - self._listed_at > CACHE_SECONDS:
                listed = self._run("list", self.cluster_file)["nodes"]
                self._nodes = {node["id"]: node for node in listed}
                self._listed_at = time.monotonic()
                self._log_failures()
            return self._nodes

    def _log_failures(self) -> None:
        for node in self._nodes.values():
            if node.get("agent_state") == "failed" and node["id"] not in self._reported_failures:
                self._reported_failures.add(node["id"])
                logger.error(
                    "rayefa: node %s (%s) failed: %s; reported to Ray as update-failed, "
                    "`rayefa status %s` shows its step",
                    node["id"],
                    node.get("private_address"),
                    node.get("agent_error") or "its agent reports a failed step",
                    self.cluster_file,
                )

    def _node(self, node_id: str) -> Optional[Dict[str, Any]]:
        nodes = self._refresh()
        if node_id not in nodes:
            nodes = self._refresh(force=True)
        return nodes.get(node_id)

    def _tags(self, node: Dict[str, Any]) -> Dict[str, str]:
        """Ray's view of a node: the tags stored with it, Ray's own defaults for nodes
        ``rayefa up`` launched, and the status its agent reports."""
        tags = {
            TAG_CLUSTER_NAME: self.cluster_name,
            TAG_NODE_KIND: node["role"],
            TAG_USER_NODE_TYPE: node["node_type"],
            TAG_NODE_NAME: f"ray-{self.cluster_name}-{node['role']}",
        }
        tags.update(node.get("tags") or {})
        tags[TAG_NODE_STATUS] = STATUS_OF_AGENT_STATE.get(
            node.get("agent_state"), "waiting-for-ssh"
        )
        return tags

    # Ray's NodeProvider interface.

    def non_terminated_nodes(self, tag_filters: Dict[str, str]) -> List[str]:
        nodes = self._refresh(force=True)
        return [
            node_id
            for node_id, node in nodes.items()
            if node["lifecycle"] in ("pending", "running")
            and all(self._tags(node).get(k) == v for k, v in tag_filters.items())
        ]

    def is_running(self, node_id: str) -> bool:
        node = self._node(node_id)
        return node is not None and node["lifecycle"] == "running"

    def is_terminated(self, node_id: str) -> bool:
        node = self._node(node_id)
        return node is None or node["lifecycle"] not in ("pending", "running")

    def node_tags(self, node_id: str) -> Dict[str, str]:
        node = self._node(node_id)
        if node is None:
            raise KeyError(f"rayefa knows no node {node_id}")
        return self._tags(node)

    def internal_ip(self, node_id: str) -> Optional[str]:
        node = self._node(node_id)
        return node.get("private_address") if node else None

    def external_ip(self, node_id: str) -> Optional[str]:
        # Nodes are reached at their private addresses only (no public ones with EFA).
        return self.internal_ip(node_id)

    def create_node(
        self, node_config: Dict[str, Any], tags: Dict[str, str], count: int
    ) -> Dict[str, Any]:
        node_type = tags.get(TAG_USER_NODE_TYPE)
        if not node_type:
            raise ValueError(f"Ray asked for nodes without {TAG_USER_NODE_TYPE}: {tags}")
        args = ["launch", self.cluster_file, "--node-type", node_type, "--count", str(count)]
        for key, value in sorted(tags.items()):
            if key != TAG_NODE_STATUS:
                args += ["--tag", f"{key}={value}"]
        launched = self._run(*args)["nodes"]
        with self._lock:
            for node in launched:
                self._nodes[node["id"]] = node
        logger.info(
            "rayefa: launched %s node(s) of type %s: %s",
            len(launched),
            node_type,
            ", ".join(node["id"] for node in launched),
        )
        return {node["id"]: node for node in launched}

    def set_node_tags(self, node_id: str, tags: Dict[str, str]) -> None:
        args = ["set-tags", self.cluster_file, node_id]
        for key, value in sorted(tags.items()):
            args += ["--tag", f"{key}={value}"]
        self._run(*args)
        with self._lock:
            node = self._nodes.get(node_id)
            if node is not None:
                node.setdefault("tags", {}).update(tags)

    def terminate_node(self, node_id: str) -> Optional[Dict[str, Any]]:
        return self.terminate_nodes([node_id])

    def terminate_nodes(self, node_ids: List[str]) -> Optional[Dict[str, Any]]:
        if not node_ids:
            return None
        ended = self._run("terminate", self.cluster_file, *node_ids)["terminated"]
        with self._lock:
            for node_id in node_ids:
                self._nodes.pop(node_id, None)
        for node in ended:
            logger.info("rayefa: terminated %s: %s", node["id"], node["outcome"])
        return None
