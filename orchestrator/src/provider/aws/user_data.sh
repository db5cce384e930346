#!/bin/bash
# rayefa user data: installs rayefa-agent, writes its configuration and starts it.
# Node: @NODE@. Progress and failures go to the console (cloud-init-output.log).
# RAYEFA_ROOT prefixes every path written (empty on a node).
set -euo pipefail
root="${RAYEFA_ROOT:-}"
url=@URL@
sha256=@SHA256@
# The packages `rayefa publish` stored, one per kind, as presigned URLs (the store's form;
# url is then empty): the node takes the kind its OS installs.
rpm_url=@RPM_URL@
rpm_sha256=@RPM_SHA256@
deb_url=@DEB_URL@
deb_sha256=@DEB_SHA256@
# The architecture (as `uname -m` names it) the package was chosen for; empty when the
# cluster file has one package for every node.
machine=@MACHINE@
say() { echo "rayefa: $*" >&2; }
fail() { echo "rayefa: FAILED: $*" >&2; exit 1; }
trap 'fail "line $LINENO: \`$BASH_COMMAND\` exited $?"' ERR

if [ -n "$url$rpm_url$deb_url" ]; then
  if [ -n "$machine" ] && [ "$(uname -m)" != "$machine" ]; then
    fail "this node is $(uname -m), but its agent package${url:+ (${url%%\?*})} is the $machine one: the instance type and the image disagree, check ImageId"
  fi
  [ -r "$root/etc/os-release" ] || fail "no /etc/os-release: cannot tell how to install a package"
  os=$(. "$root/etc/os-release" && echo " ${ID:-} ${ID_LIKE:-} ")
  case "$os" in
    *" amzn "* | *" rhel "* | *" fedora "* | *" centos "*) kind=rpm ;;
    *" debian "* | *" ubuntu "*) kind=deb ;;
    *) fail "no way to install a package on this OS (os-release says$os)" ;;
  esac
  if [ -z "$url" ]; then
    if [ "$kind" = rpm ]; then url=$rpm_url sha256=$rpm_sha256; else url=$deb_url sha256=$deb_sha256; fi
    [ -n "$url" ] || fail "no .$kind agent package was published for ${machine:-this architecture}: rayefa publish FILE the .$kind package"
  fi
  # A presigned URL's query is a credential: it is never printed.
  shown=${url%%\?*}
  dir=$(mktemp -d)
  say "downloading the agent package from $shown"
  curl -fsSL --retry 5 --retry-connrefused --connect-timeout 10 -o "$dir/pkg" "$url" \
    || fail "could not download the agent package from $shown"
  got=$(sha256sum "$dir/pkg" | cut -d' ' -f1)
  [ "$got" = "$sha256" ] \
    || fail "the agent package from $shown has SHA-256 $got, not the pinned $sha256"
  if [ "$kind" = rpm ]; then
    mv "$dir/pkg" "$dir/rayefa-agent.rpm"
    dnf install -y "$dir/rayefa-agent.rpm" || fail "dnf could not install the agent RPM"
  else
    mv "$dir/pkg" "$dir/rayefa-agent.deb"
    # Wait for the dpkg lock (cloud-init or unattended-upgrades may hold it at first
    # boot) as the agent's own apt-get calls do, instead of failing at once.
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y \
      "$dir/rayefa-agent.deb" \
      || fail "apt-get could not install the agent package"
  fi
  rm -rf "$dir"
  rayefa-agent --version >&2 || fail "the installed rayefa-agent does not run"
elif ! command -v rayefa-agent >/dev/null; then
  fail "rayefa-agent is not on this image and no rayefa.agent_package is configured"
fi

@HEAD@mkdir -p "$root/etc/rayefa"
cat >"$root/etc/rayefa/agent.toml.new" <<'@EOF@'
@TOML@@EOF@
mv "$root/etc/rayefa/agent.toml.new" "$root/etc/rayefa/agent.toml"
say "wrote /etc/rayefa/agent.toml"
systemctl enable rayefa-agent.service
# --no-block: this script runs inside cloud-final.service; waiting for a unit ordered after
# it would wait forever. restart, not start: an agent already running (an image with the
# package and an older configuration) must pick up the configuration just written.
systemctl restart --no-block rayefa-agent.service
say "rayefa-agent started; follow it with: systemctl status rayefa-agent"
