# The head of a cluster that autoscales: Ray's autoscaler runs rayefa (installed here from the
# agent store) with the cluster file and the cluster's control secret written below, so that
# the nodes it adds boot exactly as `rayefa up`'s.
rayefa_rpm_url=@RPM_URL@
rayefa_rpm_sha256=@RPM_SHA256@
rayefa_deb_url=@DEB_URL@
rayefa_deb_sha256=@DEB_SHA256@
owner=@OWNER@
if [ "$kind" = rpm ]; then url=$rayefa_rpm_url sha256=$rayefa_rpm_sha256; else url=$rayefa_deb_url sha256=$rayefa_deb_sha256; fi
[ -n "$url" ] || fail "no .$kind rayefa package was published for $machine; this head runs it for Ray's autoscaler: packaging/build --with-rayefa, then rayefa publish FILE the .$kind package"
# The same download, check and install as the agent's package above (the OS's $kind).
shown=${url%%\?*}
dir=$(mktemp -d)
say "downloading the rayefa package from $shown"
curl -fsSL --retry 5 --retry-connrefused --connect-timeout 10 -o "$dir/rayefa.$kind" "$url" \
  || fail "could not download the rayefa package from $shown"
got=$(sha256sum "$dir/rayefa.$kind" | cut -d' ' -f1)
[ "$got" = "$sha256" ] \
  || fail "the rayefa package from $shown has SHA-256 $got, not the pinned $sha256"
if [ "$kind" = rpm ]; then
  dnf install -y "$dir/rayefa.rpm" || fail "dnf could not install the rayefa RPM"
else
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y \
    "$dir/rayefa.deb" || fail "apt-get could not install the rayefa package"
fi
rm -rf "$dir"
rayefa --version >&2 || fail "the installed rayefa does not run"
# Both files carry what only the cluster's nodes may read (the secret that `rayefa check`
# authenticates with): readable by their owner, the user Ray runs as, only.
mkdir -p "$root/etc/rayefa"
(
  umask 077
  mkdir -p "$root"@SECRET_DIR@
  cat >"$root/etc/rayefa/cluster.yaml.new" <<'@EOF@'
@CLUSTER_FILE@@EOF@
  mv "$root/etc/rayefa/cluster.yaml.new" "$root"@CLUSTER_PATH@
  secret=@SECRET@
  if [ -n "$secret" ]; then printf '%s\n' "$secret" >"$root"@SECRET_PATH@; fi
  if [ -n "$owner" ]; then
    chown -R "$owner" "$root"@STATE_DIR@
    chown "$owner" "$root"@CLUSTER_PATH@
  fi
)
say "wrote the cluster file and the control secret for Ray's autoscaler"
