#!/bin/bash
# rayefa user data: installs rayefa-agent, writes its configuration and starts it.
# Node: @NODE@. Progress and failures go to the console (cloud-init-output.log).
# RAYEFA_ROOT prefixes every path written (empty on a node).
set -euo pipefail
root="${RAYEFA_ROOT:-}"
url=@URL@
sha256=@SHA256@
say() { echo "rayefa: $*" >&2; }
fail() { echo "rayefa: FAILED: $*" >&2; exit 1; }
trap 'fail "line $LINENO: \`$BASH_COMMAND\` exited $?"' ERR

if [ -n "$url" ]; then
  dir=$(mktemp -d)
  say "downloading the agent package from $url"
  curl -fsSL --retry 5 --retry-connrefused --connect-timeout 10 -o "$dir/pkg" "$url" \
    || fail "could not download the agent package from $url"
  got=$(sha256sum "$dir/pkg" | cut -d' ' -f1)
  [ "$got" = "$sha256" ] \
    || fail "the agent package from $url has SHA-256 $got, not the pinned $sha256"
  [ -r "$root/etc/os-release" ] || fail "no /etc/os-release: cannot tell how to install a package"
  os=$(. "$root/etc/os-release" && echo " ${ID:-} ${ID_LIKE:-} ")
  case "$os" in
    *" amzn "* | *" rhel "* | *" fedora "* | *" centos "*)
      mv "$dir/pkg" "$dir/rayefa-agent.rpm"
      dnf install -y "$dir/rayefa-agent.rpm" || fail "dnf could not install the agent RPM" ;;
    *" debian "* | *" ubuntu "*)
      mv "$dir/pkg" "$dir/rayefa-agent.deb"
      DEBIAN_FRONTEND=noninteractive apt-get install -y "$dir/rayefa-agent.deb" \
        || fail "apt-get could not install the agent package" ;;
    *) fail "no way to install a package on this OS (os-release says$os)" ;;
  esac
  rm -rf "$dir"
  rayefa-agent --version >&2 || fail "the installed rayefa-agent does not run"
elif ! command -v rayefa-agent >/dev/null; then
  fail "rayefa-agent is not on this image and no rayefa.agent_package is configured"
fi

mkdir -p "$root/etc/rayefa"
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
