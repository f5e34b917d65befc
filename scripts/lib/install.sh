# Installs the Debian packages Hermes needs, once. bookworm-backports (ngtcp2 1.x,
# nghttp3 1.x, curl 8) is added for the same mirror the machine's apt sources already use.

HERMES_PKGS=(
  build-essential cmake pkg-config git
  libzmq3-dev libczmq-dev libsodium-dev
  libnghttp2-dev libgnutls28-dev libsqlite3-dev libjansson-dev libev-dev
  libbpf-dev clang llvm
  libcmocka-dev python3-pytest python3-jsonschema python3-zmq python3-h2
  sqlite3 iproute2 procps curl openssl iptables
  libnetfilter-queue-dev libmnl-dev tcpdump
)
HERMES_BACKPORTS_PKGS=(libngtcp2-dev libngtcp2-crypto-gnutls-dev libnghttp3-dev)

# Prints the URI of the Debian archive (not the security one) configured on this machine.
hermes_mirror_uri() {
  local f uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '
      /^[[:space:]]*$/ { if (u != "" && s ~ /(^|[[:space:]])bookworm([[:space:]]|$)/) { print u; exit } u=""; s="" ; next }
      /^URIs:/ { u=$2 } /^Suites:/ { $1=""; s=$0 }
      END { if (u != "" && s ~ /(^|[[:space:]])bookworm([[:space:]]|$)/) print u }' "$f" | head -n1)
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      uri=$(awk '$1=="deb" && $3=="bookworm" { for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f" | head -n1)
      [ -n "$uri" ] && break
    done
  fi
  [ -n "$uri" ] || { echo "hermes install: no bookworm archive found in /etc/apt sources (add one, then retry)" >&2; return 1; }
  echo "$uri"
}

hermes_missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

hermes_install() {
  local missing bp_missing sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  missing=$(hermes_missing "${HERMES_PKGS[@]}")
  bp_missing=$(hermes_missing "${HERMES_BACKPORTS_PKGS[@]}")
  # curl 8 (backports) for --proxy-http2 in the tests; bookworm's own curl is 7.88
  case "$(dpkg-query -W -f='${Version}' curl 2>/dev/null)" in
    8.*) ;;
    *) bp_missing="$bp_missing curl" ;;
  esac
  [ -z "$missing$bp_missing" ] && return 0
  if [ -n "$bp_missing" ] && [ ! -f /etc/apt/sources.list.d/hermes-backports.sources ]; then
    local uri
    uri=$(hermes_mirror_uri)
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$uri" | $sudo tee /etc/apt/sources.list.d/hermes-backports.sources >/dev/null
  fi
  echo "hermes: installing $(echo $missing $bp_missing)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  [ -z "$missing" ] || $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
  # shellcheck disable=SC2086
  [ -z "$bp_missing" ] || $sudo apt-get install -y -qq --no-install-recommends -t bookworm-backports $bp_missing >/dev/null
}

# Packages only the data-path benchmark needs (scripts/hermes bench): the baseline proxies
# (squid, haproxy, nghttpx), libnetfilter_queue for the NFQUEUE delay line, and load tools.
HERMES_BENCH_PKGS=(
  squid haproxy nghttp2-proxy nghttp2-client
  libnetfilter-queue-dev libmnl-dev iptables iproute2
  iperf3 socat openssl procps util-linux
)

hermes_install_bench() {
  local missing sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  missing=$(hermes_missing "${HERMES_BENCH_PKGS[@]}")
  [ -z "$missing" ] && return 0
  echo "hermes: installing for the benchmarks $(echo $missing)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
  # the Debian packages start their own daemons: the benchmark runs private instances only
  local svc
  for svc in squid haproxy nghttpx; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
      $sudo "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
  done
}
