"""Unit tests of rayefa's node provider, against a fake `rayefa` at the process seam.

The fake is a Python script that keeps the cluster's nodes in a JSON file, answers
`nodes list|launch|set-tags|terminate` as the real binary does, and records every call with
the environment it was given. Run: python3 -m unittest discover -s agent/python
"""

import json
import logging
import os
import stat
import sys
import tempfile
import textwrap
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rayefa_autoscaler  # noqa: E402
from rayefa_autoscaler import RayefaError, RayefaNodeProvider  # noqa: E402

FAKE = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    state_path = {state!r}
    with open(state_path) as f:
        state = json.load(f)
    state["calls"].append({{"argv": sys.argv[1:], "env": sorted(os.environ),
                           "state_dir": os.environ.get("RAYEFA_STATE_DIR")}})
    args = sys.argv[1:]
    assert args[0] == "nodes", args
    verb, rest = args[1], args[3:]
    def tags_of(rest):
        return dict(rest[i + 1].split("=", 1) for i, a in enumerate(rest) if a == "--tag")
    if state.get("fail"):
        sys.stderr.write(state["fail"])
        sys.exit(3)
    if verb == "list":
        out = {{"cluster": "c", "nodes": state["nodes"]}}
    elif verb == "launch":
        node_type = rest[rest.index("--node-type") + 1]
        count = int(rest[rest.index("--count") + 1])
        launched = []
        for _ in range(count):
            n = len(state["nodes"])
            node = {{"id": "%s-%d" % (node_type, n), "node_type": node_type, "role": "worker",
                     "private_address": "127.0.0.%d" % (n + 2), "lifecycle": "running",
                     "agent_state": "no-answer", "autoscaled": True,
                     "tags": dict(tags_of(rest), **{{"rayefa-autoscaled": "true"}})}}
            state["nodes"].append(node)
            launched.append(node)
        out = {{"cluster": "c", "nodes": launched}}
    elif verb == "set-tags":
        node = next(n for n in state["nodes"] if n["id"] == rest[0])
        node["tags"].update(tags_of(rest[1:]))
        out = {{"id": rest[0]}}
    elif verb == "terminate":
        state["nodes"] = [n for n in state["nodes"] if n["id"] not in rest]
        out = {{"cluster": "c", "terminated": [{{"id": i, "outcome": "stopped"}} for i in rest]}}
    with open(state_path, "w") as f:
        json.dump(state, f)
    print(json.dumps(out))
    """
)

HEAD = {
    "id": "head-0",
    "node_type": "head",
    "role": "head",
    "private_address": "127.0.0.1",
    "lifecycle": "running",
    "agent_state": "ready",
    "autoscaled": False,
    "tags": {},
}


class ProviderTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.state = os.path.join(self.dir.name, "state.json")
        self.write_state({"nodes": [dict(HEAD)], "calls": []})
        binary = os.path.join(self.dir.name, "rayefa")
        with open(binary, "w") as f:
            f.write(FAKE.format(python=sys.executable, state=self.state))
        os.chmod(binary, os.stat(binary).st_mode | stat.S_IXUSR)
        self.provider = RayefaNodeProvider(
            {"rayefa_binary": binary, "cluster_file": "/c.yaml"}, "c"
        )
        # Every call reaches the fake: no listing is reused between assertions.
        self.cache = rayefa_autoscaler.CACHE_SECONDS
        rayefa_autoscaler.CACHE_SECONDS = -1.0

    def tearDown(self):
        rayefa_autoscaler.CACHE_SECONDS = self.cache
        self.dir.cleanup()

    def read_state(self):
        with open(self.state) as f:
            return json.load(f)

    def write_state(self, state):
        with open(self.state, "w") as f:
            json.dump(state, f)

    def set_node(self, node_id, **fields):
        state = self.read_state()
        for node in state["nodes"]:
            if node["id"] == node_id:
                node.update(fields)
        self.write_state(state)

    def test_nodes_up_launched_get_rays_tags_from_their_record(self):
        self.assertEqual(self.provider.non_terminated_nodes({}), ["head-0"])
        tags = self.provider.node_tags("head-0")
        self.assertEqual(tags["ray-node-type"], "head")
        self.assertEqual(tags["ray-user-node-type"], "head")
        self.assertEqual(tags["ray-cluster-name"], "c")
        self.assertEqual(tags["ray-node-status"], "up-to-date")
        self.assertEqual(self.provider.internal_ip("head-0"), "127.0.0.1")
        self.assertEqual(self.provider.non_terminated_nodes({"ray-node-type": "worker"}), [])

    def test_a_launch_passes_rays_tags_but_not_the_status(self):
        tags = {
            "ray-node-type": "worker",
            "ray-user-node-type": "cpu",
            "ray-node-status": "uninitialized",
            "ray-launch-config": "abc",
        }
        created = self.provider.create_node({}, tags, 2)
        self.assertEqual(sorted(created), ["cpu-1", "cpu-2"])
        argv = self.read_state()["calls"][-1]["argv"]
        self.assertEqual(
            argv,
            ["nodes", "launch", "/c.yaml", "--node-type", "cpu", "--count", "2",
             "--tag", "ray-launch-config=abc", "--tag", "ray-node-type=worker",
             "--tag", "ray-user-node-type=cpu"],
        )
        workers = self.provider.non_terminated_nodes(
            {"ray-node-type": "worker", "ray-user-node-type": "cpu"}
        )
        self.assertEqual(workers, ["cpu-1", "cpu-2"])
        self.assertEqual(self.provider.node_tags("cpu-1")["ray-launch-config"], "abc")

    def test_the_status_follows_the_agent(self):
        self.provider.create_node({}, {"ray-user-node-type": "cpu"}, 1)
        seen = {}
        for agent_state in ["no-answer", "bootstrapping", "ready", "failed", "unreachable"]:
            self.set_node("cpu-1", agent_state=agent_state)
            self.provider.non_terminated_nodes({})
            seen[agent_state] = self.provider.node_tags("cpu-1")["ray-node-status"]
        self.assertEqual(
            seen,
            {
                "no-answer": "waiting-for-ssh",
                "bootstrapping": "setting-up",
                "ready": "up-to-date",
                "failed": "update-failed",
                "unreachable": "waiting-for-ssh",
            },
        )

    def test_a_failed_agent_is_logged_once(self):
        self.provider.create_node({}, {"ray-user-node-type": "cpu"}, 1)
        self.set_node("cpu-1", agent_state="failed", agent_error="setup-commands: exit 1")
        with self.assertLogs(rayefa_autoscaler.logger, logging.ERROR) as logged:
            self.provider.non_terminated_nodes({})
            self.provider.non_terminated_nodes({})
        self.assertEqual(len(logged.records), 1)
        self.assertIn("cpu-1", logged.output[0])
        self.assertIn("setup-commands: exit 1", logged.output[0])

    def test_tags_are_set_and_nodes_terminated_through_rayefa(self):
        self.provider.create_node({}, {"ray-user-node-type": "cpu"}, 2)
        self.provider.set_node_tags("cpu-1", {"ray-node-status": "up-to-date", "x": "1"})
        self.assertEqual(
            self.read_state()["calls"][-1]["argv"],
            ["nodes", "set-tags", "/c.yaml", "cpu-1",
             "--tag", "ray-node-status=up-to-date", "--tag", "x=1"],
        )
        self.assertEqual(self.provider.node_tags("cpu-1")["x"], "1")
        self.provider.terminate_nodes(["cpu-1", "cpu-2"])
        self.assertEqual(
            self.read_state()["calls"][-1]["argv"],
            ["nodes", "terminate", "/c.yaml", "cpu-1", "cpu-2"],
        )
        self.assertTrue(self.provider.is_terminated("cpu-1"))
        self.assertFalse(self.provider.is_running("cpu-2"))
        self.assertEqual(self.provider.non_terminated_nodes({}), ["head-0"])

    def test_the_heads_ray_variables_do_not_reach_rayefa(self):
        os.environ["RAY_OVERRIDE_RESOURCES"] = '{"CPU": 0}'
        os.environ["RAYEFA_LOCAL_NODE"] = "/head"
        try:
            self.provider.non_terminated_nodes({})
        finally:
            del os.environ["RAY_OVERRIDE_RESOURCES"]
            del os.environ["RAYEFA_LOCAL_NODE"]
        env = self.read_state()["calls"][-1]["env"]
        self.assertNotIn("RAY_OVERRIDE_RESOURCES", env)
        self.assertNotIn("RAYEFA_LOCAL_NODE", env)
        self.assertIn("PATH", env)

    def test_the_state_dir_reaches_rayefa_as_its_state_directory(self):
        self.provider.non_terminated_nodes({})
        self.assertIsNone(self.read_state()["calls"][-1]["state_dir"])
        on_ec2 = RayefaNodeProvider(
            dict(self.provider.provider_config, state_dir="/var/lib/rayefa-orchestrator"), "c"
        )
        on_ec2.non_terminated_nodes({})
        self.assertEqual(
            self.read_state()["calls"][-1]["state_dir"], "/var/lib/rayefa-orchestrator"
        )

    def test_a_failing_command_raises_with_its_message(self):
        state = self.read_state()
        state["fail"] = "error: no running head"
        self.write_state(state)
        with self.assertRaises(RayefaError) as raised:
            self.provider.non_terminated_nodes({})
        self.assertIn("exited 3", str(raised.exception))
        self.assertIn("no running head", str(raised.exception))

    def test_the_configuration_must_name_rayefa_and_the_cluster_file(self):
        with self.assertRaises(ValueError):
            RayefaNodeProvider({"cluster_file": "/c.yaml"}, "c")


if __name__ == "__main__":
    unittest.main()
