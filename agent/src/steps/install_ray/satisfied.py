"""Says whether requirement specifiers are met by what is installed for this interpreter.

Run by rayefa-agent's install-ray step with the virtualenv's python, one requirement per
argument. It follows each requirement, its extras and their dependencies the way pip finds a
requirement already satisfied, without the network, and prints one line:
`rayefa-requirements: {"satisfied": ..., "problems": [...], "unverifiable": [...],
"versions": {...}, "ray_version": ...}` (the installed Ray, whether or not it was asked for). Problems are requirements known to be unmet; unverifiable ones (a URL, a
path, a line pip alone understands) are left to pip, which is the only judge of them.
Works with Python 3.8 and later and the packaging library vendored by any pip since 10.
"""

import json
import re
import sys
from importlib import metadata

try:
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError:
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


installed = {}
for dist in metadata.distributions():
    name = dist.metadata["Name"]
    if name:
        installed.setdefault(canonical(name), dist)

problems = []
unverifiable = []
versions = {}
seen = set()


def problem(text):
    if text not in problems:
        problems.append(text)


def applies(marker, extras):
    return marker is None or any(marker.evaluate({"extra": extra}) for extra in extras)


def visit(req, needed_by):
    key = (canonical(req.name), frozenset(canonical(e) for e in req.extras), req.url)
    if key in seen:
        return
    seen.add(key)
    dist = installed.get(canonical(req.name))
    if dist is None:
        problem("%s is not installed%s" % (req.name, needed_by))
        return
    if req.url:
        unverifiable.append("%s comes from %s, which only pip can compare" % (req.name, req.url))
        return
    if not req.specifier.contains(dist.version, prereleases=True):
        problem("%s %s is installed but %s is wanted%s" % (req.name, dist.version, req, needed_by))
        return
    extras = [""] + sorted(req.extras)
    for text in dist.requires or []:
        try:
            dependency = Requirement(text)
        except InvalidRequirement:
            continue
        if applies(dependency.marker, extras):
            visit(dependency, " (needed by %s)" % req.name)


for text in sys.argv[1:]:
    try:
        req = Requirement(text)
    except InvalidRequirement as err:
        unverifiable.append("cannot check %r without pip: %s" % (text, err))
        versions[text] = None
        continue
    dist = installed.get(canonical(req.name))
    versions[req.name] = dist.version if dist is not None else None
    if applies(req.marker, [""]):
        visit(req, "")

ray = installed.get("ray")
report = {
    "ray_version": ray.version if ray is not None else None,
    "satisfied": not problems and not unverifiable,
    "problems": problems,
    "unverifiable": unverifiable,
    "versions": versions,
}
print("rayefa-requirements: " + json.dumps(report, sort_keys=True))
